"""The redirect hot path against the real broker: redirects, HEAD, 404 + orphan clicks, click records, bad input."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import pytest_asyncio

from clickwire.kafka import ensure_topics
from clickwire.links import Link
from clickwire.settings import CommonSettings
from tests.integration.redirector.conftest import (
    DOMAIN,
    Redirector,
    make_link,
    put_links,
    read_clicks,
    start_redirector,
)

pytestmark = pytest.mark.kafka

Served = tuple[Redirector, dict[str, Link]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def module_topics(kafka_common: CommonSettings) -> CommonSettings:
    """Topics of this module's own (one redirector serves every test here, which keeps the module fast)."""
    settings = replace(kafka_common, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(settings)
    return settings


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(module_topics: CommonSettings, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Served]:
    """One redirector over this module's topics holding two links, stopped after the module."""
    plain = make_link("promo1", "https://example.com/landing?a=1", utm_source="news")
    permanent = make_link("perm", "https://example.org/", redirect_type=301)
    await put_links(module_topics, plain, permanent)
    r = start_redirector(module_topics, tmp_path_factory.mktemp("redirect"),
                         extra={"CLICKWIRE_REDIRECTOR_DOMAINS": f"{DOMAIN},other.test"})
    try:
        yield r, {"plain": plain, "permanent": permanent}
    finally:
        r.stop()


async def test_redirect_head_404_and_click_records(served: Served,
                                                   module_topics: CommonSettings) -> None:
    """GET/HEAD redirect with Location and caching headers, unknown codes get a 404 page, each answer is a raw click."""
    r, links = served
    headers = {"host": DOMAIN, "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
               "referer": "https://news.example/item", "accept-language": "de-DE,de;q=0.9",
               "sec-purpose": "prefetch", "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"Linux"'}
    async with httpx.AsyncClient(base_url=r.url, headers=headers) as client:
        got = await client.get("/promo1?qr=1&x=y")
        head = await client.head("/perm")
        missing = await client.get("/nosuchcode")
    assert got.status_code == 302
    assert got.headers["location"] == "https://example.com/landing?a=1&utm_source=news"
    assert got.headers["cache-control"] == "no-store"
    assert head.status_code == 301
    assert head.headers["location"] == "https://example.org/"
    assert head.headers["cache-control"] == "private, max-age=90"
    assert head.content == b""
    assert missing.status_code == 404
    assert b"Link not found" in missing.content

    ids = {got.headers["x-click-id"]: "get", head.headers["x-click-id"]: "head", missing.headers["x-click-id"]: "404"}
    clicks = await read_clicks(module_topics, 3, idle_s=0.5)
    clicks = [c for c in clicks if c["click_id"] in ids]  # other tests here click too
    assert sorted(c["click_id"] for c in clicks) == sorted(ids)
    by_kind = {ids[c["click_id"]]: c for c in clicks}
    get = by_kind["get"]
    assert get["_key"] == links["plain"].id.encode()
    assert get["link_id"] == links["plain"].id
    assert get["workspace_id"] == "ws_test"
    assert (get["domain"], get["code"], get["method"], get["status"]) == (DOMAIN, "promo1", "GET", 302)
    assert get["destination"] == "https://example.com/landing?a=1&utm_source=news"
    assert get["client_ip"] == "127.0.0.1"
    assert get["user_agent"] == headers["user-agent"]
    assert get["referer"] == headers["referer"]
    assert get["accept_language"] == headers["accept-language"]
    assert get["purpose"] == "prefetch"
    assert (get["ch_ua_mobile"], get["ch_ua_platform"]) == ("?0", '"Linux"')
    assert get["query"] == "qr=1&x=y"
    assert get["qr"] is True
    assert get["redirector_id"]
    assert get["click_id"][14] == "7", "click ids are UUIDv7"
    assert by_kind["head"]["method"] == "HEAD"
    assert by_kind["head"]["status"] == 301
    orphan = by_kind["404"]
    assert (orphan["link_id"], orphan["workspace_id"], orphan["status"]) == ("", "", 404)
    assert orphan["destination"] is None
    assert orphan["_key"] == b""


async def test_health_and_metrics_on_the_same_port(served: Served) -> None:
    """/_/health reports the loaded links and /_/metrics is a Prometheus exposition with the redirector's series."""
    r, _ = served
    async with httpx.AsyncClient(base_url=r.url) as client:
        health = await client.get("/_/health")
        metrics = await client.get("/_/metrics")
    assert health.status_code == 200
    assert health.json()["links"] == 2
    assert metrics.status_code == 200
    assert "clickwire_redirector_queue_depth" in metrics.text


def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes as an HTTP request and return the first response's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("path", "host", "want"),
    [
        ("/" + "a" * 3000, DOMAIN, 414),  # oversized URL
        ("/promo1?" + "q=1&" * 2000, DOMAIN, 414),  # oversized query
        ("/..%2F..%2Fetc%2Fpasswd", DOMAIN, 400),  # path trick
        ("/promo1/../perm", DOMAIN, 400),
        ("/a%00b", DOMAIN, 400),  # control character
        ("/a%0d%0aSet-Cookie:x", DOMAIN, 400),  # header injection attempt
        ("/promo1", "unknown.test", 421),  # Host not served
        ("/promo1", "bad host!", 400),
    ],
)
def test_bad_requests_are_clear_4xx(served: Served, path: str, host: str, want: int) -> None:
    """Oversized URLs, control characters, path tricks and unknown hosts are answered with a 4xx, never a 5xx."""
    r, _ = served
    resp = _raw(r.port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert _status(resp) == want, resp[:300]


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (b"User-Agent: caf\xc3\xa9 \xff\xfe broken\r\n", 400),  # invalid UTF-8 in a header the click carries
        (b"X-Big: " + b"x" * 40_000 + b"\r\n", 431),  # header block over 16 KiB
        (b"User-Agent: " + b"u" * 6000 + b"\r\n", 400),  # one header over 4 KiB
    ],
)
def test_bad_headers_never_5xx(served: Served, header: bytes, want: int) -> None:
    """Invalid UTF-8 and oversized headers get a clear 4xx and the server keeps serving."""
    r, _ = served
    resp = _raw(r.port, b"GET /promo1 HTTP/1.1\r\nHost: " + DOMAIN.encode() + b"\r\n" + header
                + b"Connection: close\r\n\r\n")
    assert _status(resp) == want, resp[:300]
    after = httpx.get(f"{r.url}/promo1", headers={"host": DOMAIN})
    assert after.status_code == 302


def test_other_methods_are_405(served: Served) -> None:
    """POST to a short code is 405 with an Allow header."""
    r, _ = served
    resp = httpx.post(f"{r.url}/promo1", headers={"host": DOMAIN})
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"
