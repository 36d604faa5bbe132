"""VettedTransport against real servers on 127.0.0.1: vetted connects, Host and SNI kept, caps, timeouts."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from services.dispatcher.ssrf import SSRFError, parse_allow_nets
from services.dispatcher.transport import VettedTransport

LOOPBACK = parse_allow_nets(["127.0.0.0/8"])
BIG = b"x" * 100_000


@dataclass
class Receiver:
    """A real aiohttp server that records what it was sent."""

    port: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)
    never: asyncio.Event = field(default_factory=asyncio.Event)


async def _start(receiver: Receiver, host: str, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        receiver.seen.append(
            {
                "path": request.path,
                "host": request.headers.get("Host", ""),
                "body": body.decode(),
                "local": peer,
            }
        )
        if request.path == "/big":
            return web.Response(status=200, body=BIG)
        if request.path == "/redirect":
            return web.Response(status=302, headers={"Location": "/ok"})
        if request.path == "/close":
            return web.Response(status=204, headers={"Connection": "close"})
        if request.path == "/hang":
            await receiver.never.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, receiver.port, ssl_context=ssl_context)
    await site.start()
    receiver.port = runner.addresses[0][1]
    return runner


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    runner = await _start(rec, "127.0.0.1")
    yield rec
    rec.never.set()
    await runner.cleanup()


def _fixed_resolver(answers: dict[str, list[str]], calls: list[str]):
    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[host]

    return resolve


async def test_hostname_goes_to_vetted_address_with_host_header(receiver: Receiver) -> None:
    """A name is resolved once by our resolver, connected to at that address, and Host keeps the name."""
    calls: list[str] = []
    transport = VettedTransport(
        allow_nets=LOOPBACK, resolver=_fixed_resolver({"hook.test": ["127.0.0.1"]}, calls)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        for i in range(3):
            resp = await client.post(f"http://hook.test:{receiver.port}/ok", content=f"b{i}".encode())
            assert resp.status_code == 204
    assert [s["host"] for s in receiver.seen[-3:]] == [f"hook.test:{receiver.port}"] * 3
    assert [s["body"] for s in receiver.seen[-3:]] == ["b0", "b1", "b2"]
    assert receiver.seen[-1]["local"] == "127.0.0.1"
    assert calls == ["hook.test"]  # keep-alive: one connection, one lookup


async def test_internal_address_refused_without_allow_list(receiver: Receiver) -> None:
    """Without the allow-list, a loopback literal and a name resolving to loopback are refused unsent."""
    before = len(receiver.seen)
    transport = VettedTransport(resolver=_fixed_resolver({"hook.test": ["127.0.0.1"]}, []))
    async with httpx.AsyncClient(transport=transport) as client:
        for url in (f"http://127.0.0.1:{receiver.port}/ok", f"http://hook.test:{receiver.port}/ok"):
            with pytest.raises(SSRFError) as err:
                await client.post(url, content=b"x")
            assert err.value.reason == "loopback"
        with pytest.raises(SSRFError) as err:
            await transport.post(f"http://2130706433:{receiver.port}/ok", b"x", {})
        assert err.value.reason == "loopback"
    assert len(receiver.seen) == before


async def test_rebinding_is_vetted_at_each_new_connection(receiver: Receiver) -> None:
    """When the name later resolves to a private address, the next new connection is refused."""
    answers = {"hook.test": ["127.0.0.1"]}
    calls: list[str] = []
    transport = VettedTransport(allow_nets=LOOPBACK, resolver=_fixed_resolver(answers, calls))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.post(f"http://hook.test:{receiver.port}/close", content=b"x")).status_code == 204
        answers["hook.test"] = ["10.0.0.7"]
        with pytest.raises(SSRFError) as err:
            await client.post(f"http://hook.test:{receiver.port}/ok", content=b"x")
    assert err.value.reason == "private"
    assert calls == ["hook.test", "hook.test"]


async def test_connects_to_the_vetted_address_only() -> None:
    """The socket goes to the address the vetting resolver returned (127.0.0.2), not another lookup's."""
    rec = Receiver()
    runner = await _start(rec, "127.0.0.2")
    try:
        transport = VettedTransport(
            allow_nets=LOOPBACK, resolver=_fixed_resolver({"hook.test": ["127.0.0.2"]}, [])
        )
        async with httpx.AsyncClient(transport=transport) as client:
            resp = await client.post(f"http://hook.test:{rec.port}/ok", content=b"x")
        assert (resp.status_code, rec.seen[0]["local"], rec.seen[0]["host"]) == (
            204,
            "127.0.0.2",
            f"hook.test:{rec.port}",
        )
    finally:
        await runner.cleanup()


async def test_redirect_not_followed(receiver: Receiver) -> None:
    """A 302 comes back as the response; its Location is never requested."""
    transport = VettedTransport(allow_nets=LOOPBACK)
    async with httpx.AsyncClient(transport=transport) as client:
        resp = await client.post(f"http://127.0.0.1:{receiver.port}/redirect", content=b"x")
    assert (resp.status_code, resp.headers["location"]) == (302, "/ok")
    assert receiver.seen[-1]["path"] == "/redirect"


async def test_body_capped_and_connection_still_usable(receiver: Receiver) -> None:
    """A 100 kB answer is cut to the cap and marked truncated; the next request still succeeds."""
    transport = VettedTransport(allow_nets=LOOPBACK, max_body_bytes=4096)
    async with httpx.AsyncClient(transport=transport) as client:
        resp = await client.post(f"http://127.0.0.1:{receiver.port}/big", content=b"x")
        assert (resp.status_code, len(resp.content), resp.extensions["truncated"]) == (200, 4096, True)
        again = await transport.post(
            f"http://127.0.0.1:{receiver.port}/ok", b"x", {"content-type": "text/plain"}
        )
    assert (again.status, again.truncated, again.body) == (204, False, b"")


async def test_total_timeout(receiver: Receiver) -> None:
    """A receiver that never answers ends in an httpx timeout after the total timeout."""
    transport = VettedTransport(allow_nets=LOOPBACK, total_timeout_s=0.3)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.post(f"http://127.0.0.1:{receiver.port}/hang", content=b"x")


async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening maps to httpx.ConnectError."""
    transport = VettedTransport(allow_nets=LOOPBACK)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("http://127.0.0.1:9/ok", content=b"x")


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_uses_sni_and_checks_cert_for_the_hostname(tmp_path: Path) -> None:
    """Over TLS the handshake carries the URL's name as SNI and the certificate is checked against it."""
    cert, key = _self_signed(tmp_path, "hook.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sni_seen: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni_seen.append(name)
    rec = Receiver()
    runner = await _start(rec, "127.0.0.1", server_ctx)
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        answers = {"hook.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
        transport = VettedTransport(
            allow_nets=LOOPBACK, ssl_context=client_ctx, resolver=_fixed_resolver(answers, [])
        )
        async with httpx.AsyncClient(transport=transport) as client:
            resp = await client.post(f"https://hook.test:{rec.port}/ok", content=b"x")
            assert resp.status_code == 204
            with pytest.raises(httpx.ConnectError):
                await client.post(f"https://other.test:{rec.port}/ok", content=b"x")
        assert sni_seen[0] == "hook.test"
        assert [s["host"] for s in rec.seen] == [f"hook.test:{rec.port}"]
    finally:
        await runner.cleanup()
