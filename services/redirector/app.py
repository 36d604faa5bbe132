"""The redirect hot path: the handler http1.HTTPServer calls for each request, GET/HEAD /{code} by Host.

Per request: check sizes and the code's syntax, find the link by (host, code), `decide()` the
answer, send it, then hand one captured click to the publisher (which never waits for Kafka, and
finishes and encodes clicks in its own batch step, see rawclick.py). Every answer on a served domain
and a well-formed code is a click, including 404 (an orphan click with link_id "") and pages; each
carries its click id in ``X-Click-Id`` so a client (and the broker-outage test) can tell which clicks
it was answered for.

Fast path: a plain link's answer does not depend on the request (decide.ready_answer), so after its
first click the LinkTable keeps it ready and later clicks on it skip code validation, host parsing,
the record decode and decide(): they read the headers the click record carries, check their sizes,
answer and capture. The first click that made the answer passed every check the slow path makes, and
an answer is only found for (normalized host, code) keys that did; anything else (unknown codes,
internal paths, other methods, bad headers) takes the slow path, which answers as it always did.

Operational endpoints live under ``/_/``, which can never be a short code ('/' is not in the code
alphabet): ``GET /_/health`` (JSON, 200 while serving) and ``GET /_/metrics`` (Prometheus).

Bad input is always a 4xx, never a 5xx: 414 for a path or query over 2 KiB / 4 KiB, 400 for a code
with characters outside [A-Za-z0-9_-] (control characters, '..', '%2F', extra '/'), 400 for a
header that is not valid text or is longer than 4 KiB, 421 for a Host this redirector does not
serve, 405 for other methods. Request heads over 16 KiB are refused by the server itself (431, http1.py).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from prometheus_client import Counter
from uuid_utils import uuid7

from clickwire.codes import valid_code
from clickwire.observability import metrics_response
from services.redirector.decide import RequestFacts, country_from_header, decide, ready_answer
from services.redirector.http1 import Request, Responder
from services.redirector.publisher import ClickPublisher
from services.redirector.table import LinkTable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_PATH: Final = 2048
MAX_QUERY: Final = 4096
MAX_HEADER: Final = 4096
INTERNAL_PREFIX: Final = "/_/"
_TEXT: Final = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")]
_HOST_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-[]:")
# Distinct Host header values seen with a valid host -> the normalized host (a handful in practice;
# cleared when full so random Host headers cannot grow it).
_HOSTS_MAX: Final = 1024

REFUSED = Counter("clickwire_redirector_refused_total", "Requests refused as bad input", ["reason"])


def normalize_host(raw: str | None) -> str | None:
    """Return the lower-case host without port or trailing dot, or None when it is not a hostname."""
    if not raw or len(raw) > 255:
        return None
    host = raw.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return None
        host = host[: end + 1]
    else:
        host = host.rsplit(":", 1)[0] if ":" in host else host
    host = host.rstrip(".")
    if not host or not _HOST_CHARS.issuperset(host):
        return None
    return host


class RedirectApp:
    """The request handler: redirects, pages, click hand-over, /_/health and /_/metrics."""

    def __init__(self, table: LinkTable, counts: dict[str, int], *,
                 publisher: ClickPublisher | None, domains: tuple[str, ...] = (),
                 served_domain: Callable[[str], bool] | None = None,
                 trusted_proxies: tuple[Network, ...] = (), trust_country_header: bool = False,
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self._table = table
        self._answer = table.answers.get
        self._counts = counts
        self._submit = publisher.submit if publisher is not None else None
        self._domains = frozenset(domains)
        self._served = served_domain
        # Forwarded headers are captured for the publisher's client_ip() only behind a trusted proxy.
        self._trusted = bool(trusted_proxies)
        self._trust_country = trust_country_header
        self._health = health or (lambda: {"ok": True})
        self._hosts: dict[str | None, str] = {}

    def _serves(self, host: str) -> bool:
        if self._domains:
            return host in self._domains
        return self._served(host) if self._served is not None else True

    def __call__(self, scope: Request, proto: Responder) -> None:
        """Answer one HTTP request (synchronously: nothing on this path waits)."""
        path: str = scope.path
        query: str = scope.query_string
        method: str = scope.method
        if (method == "GET" or method == "HEAD") and len(path) <= MAX_PATH and len(query) <= MAX_QUERY:
            headers = scope.headers
            try:
                host = self._hosts.get(headers.get("host") or scope.authority)
                code = path[1:]
                answer = self._answer((host, code)) if host is not None else None
                if answer is not None:
                    # The same reads as in _slow(), kept inline in both: a shared helper returning a
                    # tuple costs ~0.3 us a request, a tenth of this path. Change both together.
                    user_agent: str = headers.get("user-agent", "")
                    referer: str | None = headers.get("referer")
                    accept_language: str | None = headers.get("accept-language")
                    purpose: str | None = headers.get("sec-purpose") or headers.get("purpose")
                    ch_ua: str | None = headers.get("sec-ch-ua")
                    ch_mobile: str | None = headers.get("sec-ch-ua-mobile")
                    ch_platform: str | None = headers.get("sec-ch-ua-platform")
                    forwarded_for = forwarded = None
                    if self._trusted:
                        forwarded_for = headers.get("x-forwarded-for")
                        forwarded = headers.get("forwarded")
            except (UnicodeDecodeError, ValueError):
                answer = None  # the slow path refuses it
            if answer is not None and host is not None:
                now_ms = time.time_ns() // 1_000_000
                if (now_ms < answer.valid_until and len(user_agent) <= MAX_HEADER
                        and (referer is None or len(referer) <= MAX_HEADER)
                        and (accept_language is None or len(accept_language) <= MAX_HEADER)):
                    click_id = str(uuid7()).encode()
                    proto.response_prepared(b"%sx-click-id: %s\r\n" % (answer.head, click_id))
                    if self._submit is not None:
                        self._submit(answer.key, (
                            click_id, now_ms, answer.link_id, answer.workspace_id, host, code, method,
                            scope.client, user_agent, referer, accept_language, purpose, ch_ua, ch_mobile,
                            ch_platform, query, answer.status, answer.location, forwarded_for, forwarded,
                        ))
                    return None
        return self._slow(scope, proto, path, query, method)

    def _slow(self, scope: Request, proto: Responder, path: str, query: str, method: str) -> None:
        """Every check, lookup and decide(); remembers the ready answer of a plain link."""
        if len(path) > MAX_PATH or len(query) > MAX_QUERY:
            return self._refuse(proto, 414, "uri_too_long", "URI too long\n")
        if path.startswith(INTERNAL_PREFIX):
            return self._internal(path, method, proto)
        if method != "GET" and method != "HEAD":
            REFUSED.labels("method").inc()
            proto.response_str(405, [*_TEXT, ("allow", "GET, HEAD")], "method not allowed\n")
            return None
        code = path[1:]
        if not valid_code(code):
            return self._refuse(proto, 400 if code else 404, "bad_code", "not a short link\n")
        headers = scope.headers
        try:
            raw_host: str | None = headers.get("host") or scope.authority
            host = normalize_host(raw_host)
            user_agent: str = headers.get("user-agent", "")
            referer: str | None = headers.get("referer")
            accept_language: str | None = headers.get("accept-language")
            purpose: str | None = headers.get("sec-purpose") or headers.get("purpose")
            ch_ua: str | None = headers.get("sec-ch-ua")
            ch_mobile: str | None = headers.get("sec-ch-ua-mobile")
            ch_platform: str | None = headers.get("sec-ch-ua-platform")
            forwarded_for = forwarded = None
            if self._trusted:
                forwarded_for = headers.get("x-forwarded-for")
                forwarded = headers.get("forwarded")
        except (UnicodeDecodeError, ValueError):
            return self._refuse(proto, 400, "bad_header", "header is not valid UTF-8\n")
        if host is None:
            return self._refuse(proto, 400, "bad_host", "missing or malformed Host\n")
        if not self._serves(host):
            return self._refuse(proto, 421, "unknown_host", "this host is not served here\n")
        if (len(user_agent) > MAX_HEADER or (referer is not None and len(referer) > MAX_HEADER)
                or (accept_language is not None and len(accept_language) > MAX_HEADER)):
            return self._refuse(proto, 400, "header_too_long", "header too long\n")

        country = None
        if self._trust_country:
            country = country_from_header(headers.get("cf-ipcountry"))
        link = self._table.lookup(host, code)
        now_ms = time.time_ns() // 1_000_000
        facts = RequestFacts(method, user_agent, referer, accept_language, query, country,
                             ch_mobile, ch_platform)
        decision = decide(link, facts, now_ms, self._counts)
        click_id = str(uuid7())
        out = [*decision.headers, ("x-click-id", click_id)]
        if decision.body is None or method == "HEAD":
            proto.response_empty(decision.status, out)
        else:
            proto.response_bytes(decision.status, out, decision.body)

        if self._submit is not None:
            self._submit(
                link.link_id.encode() if link is not None else b"",
                (click_id.encode(), now_ms, link.link_id if link is not None else "",
                 link.workspace_id if link is not None else "", host, code, method, scope.client, user_agent,
                 referer, accept_language, purpose, ch_ua, ch_mobile, ch_platform, query,
                 decision.status, decision.location, forwarded_for, forwarded),
            )
        if link is not None and decision.outcome == "redirect":
            answer = ready_answer(link, now_ms)
            if answer is not None:
                self._table.remember(host, code, answer)
                if raw_host is not None and raw_host not in self._hosts:
                    if len(self._hosts) >= _HOSTS_MAX:
                        self._hosts.clear()
                    self._hosts[raw_host] = host
        return None

    def _refuse(self, proto: Responder, status: int, reason: str, text: str) -> None:
        REFUSED.labels(reason).inc()
        proto.response_str(status, _TEXT, text)

    def _internal(self, path: str, method: str, proto: Responder) -> None:
        if method not in ("GET", "HEAD"):
            proto.response_str(405, [*_TEXT, ("allow", "GET, HEAD")], "method not allowed\n")
        elif path == "/_/health":
            detail = self._health()
            proto.response_bytes(200 if detail.get("ok", True) else 503,
                                 [("content-type", "application/json"), ("cache-control", "no-store")],
                                 orjson.dumps(detail))
        elif path == "/_/metrics":
            body, ctype = metrics_response()
            proto.response_bytes(200, [("content-type", ctype)], body)
        else:
            proto.response_str(404, _TEXT, "not found\n")

