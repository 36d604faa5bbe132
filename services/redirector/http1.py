"""The redirector's HTTP/1.1 server: asyncio protocols on uvloop, requests parsed by httptools.

Why not a general server: every redirect answer is known the moment a request's head is parsed (no
body to read, nothing to await), so the handler runs inside the parser's callback on the event loop's
own thread and writes its answer at once. granian, the server used before, parses on a Rust thread
and hands each request to the Python thread: below saturation that is a thread wake-up and a GIL
hand-off per request, which doubled our CPU per request at 20,000 requests/s and made the p99 target
unreachable. docs/performance.md has the numbers that decided it.

What this server does, and nothing more:

- HTTP/1.1 and 1.0, keep-alive (``Connection: close`` and 1.0 without keep-alive close after the
  answer), pipelining (answers are written in request order because each is written before the next
  request is parsed).
- Parsing by httptools (llhttp, Node.js's parser, strict mode): malformed requests get 400 and the
  connection is closed; so does a second Host header (RFC 9112 3.2).
- Limits: a request head (request line + headers) over ``max_head`` bytes gets 431; a body over
  ``MAX_BODY`` (a GET has none; this is only a guard) gets 413. Both close the connection.
- Timeouts, checked once a second: a request must arrive in full within ``header_timeout`` of its
  first byte (or of the connection opening), an idle keep-alive connection is closed after
  ``keepalive_timeout``.
- Back-pressure: a client that does not read its answers stops being read from until it does.
- Header values are UTF-8; one that is not raises UnicodeDecodeError when the handler reads it (the
  handler answers 400), exactly like headers it never reads cost nothing.

The handler is called as ``handler(request, connection)`` and must answer synchronously through one
of ``response_empty``, ``response_bytes``, ``response_str`` or ``response_prepared`` (a head made
once by ``encode_head``) on the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, Protocol, cast

import httptools
import structlog

log = structlog.get_logger(__name__)

MAX_HEAD: Final = 16384
MAX_BODY: Final = 16384
HEADER_TIMEOUT_S: Final = 10.0
KEEPALIVE_TIMEOUT_S: Final = 75.0

_STATUS_LINES: Final = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}
_REFUSAL_HEADERS: Final = b"content-type: text/plain; charset=utf-8\r\n"


def encode_head(status: int, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> bytes:
    """A status line and header lines, encoded once for ``Connection.response_prepared``.

    Raises ValueError for a header name or value with a line break (header injection).
    """
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        raise ValueError("a header name or value holds a line break")
    return f"{_STATUS_LINES[status]}{lines}".encode()


class Headers(dict[str, str]):
    """Request headers by lower-case name; reading one whose value was not UTF-8 raises."""

    __slots__ = ("_bad",)

    def __init__(self, values: dict[str, str], bad: frozenset[str]) -> None:
        super().__init__(values)
        self._bad = bad

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._bad:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, f"header {key!r} is not valid UTF-8")
        return super().get(key, default)


@dataclass(slots=True)
class Request:
    """One parsed request: what the redirect handler reads."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    authority: str | None  # from an absolute-form request target, else None
    client: str  # the peer's IP address (IPv6 without brackets), "" when not known


class Responder(Protocol):
    """How a handler answers: exactly one of these per request."""

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None: ...
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...
    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None: ...
    def response_prepared(self, head: bytes) -> None: ...


Handler = Callable[[Request, Responder], None]


class _Refuse(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class Connection(asyncio.Protocol):
    """One client connection: feeds bytes to the parser and answers each request as it completes."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._handler = server.handler
        self._max_head = server.max_head
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._bad: set[str] = set()
        self._head = 0
        self._body = 0
        self._keep_alive = True
        self._answered = False
        self._closing = False
        self.busy = False  # inside a request (first byte seen, answer not yet written)
        self.deadline = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._client = peer[0]
        self.deadline = self._server.now + self._server.header_timeout
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()  # answered as plain HTTP/1.1; what follows is another protocol
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _Refuse):
                self._refuse(cause.status)
            else:
                raise
        except httptools.HttpParserError:
            self._refuse(400)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.busy = True
        self.deadline = self._server.now + self._server.header_timeout
        self._url = b""
        self._headers = {}
        self._head = self._body = 0
        self._answered = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head += len(url)
        if self._head > self._max_head:
            raise _Refuse(431 if len(self._url) < self._max_head else 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        if self._head > self._max_head:
            raise _Refuse(431)
        key = name.decode("latin-1").lower()
        if key in self._headers or key in self._bad:
            if key == "host":
                raise _Refuse(400)
            return  # the first of a repeated header is the one read
        try:
            self._headers[key] = value.decode()
        except UnicodeDecodeError:
            self._bad.add(key)

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > MAX_BODY:
            raise _Refuse(413)

    def on_message_complete(self) -> None:
        if self._closing:
            return  # pipelined behind a request that closed the connection: not answered, not a click
        url = self._url
        authority = None
        if url[:1] != b"/":  # absolute form (RFC 9112 3.2.2) or '*': use its path, keep its authority
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
            authority = parsed.host.decode("latin-1") if parsed.host else None
        path, _, query = url.partition(b"?")
        headers: dict[str, str] = self._headers
        if self._bad:
            headers = Headers(headers, frozenset(self._bad))
            self._bad = set()
        try:
            request = Request(self._parser.get_method().decode("latin-1"), path.decode("latin-1"),
                              query.decode("latin-1"), headers, authority, self._client)
            self._handler(request, self)
        except Exception:
            log.exception("redirect handler failed")
        else:
            if not self._answered:
                log.error("redirect handler wrote no answer")
        if not self._answered:
            self._refuse(500)
            return
        self.busy = False
        self.deadline = self._server.now + self._server.keepalive_timeout
        if not self._keep_alive or self._server.closing:
            self.close()

    # -- answering ---------------------------------------------------------------------------------

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Answer with no body (redirects, and every answer to HEAD)."""
        self._write(status, headers, b"")

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._write(status, headers, body)

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self._write(status, headers, body.encode())

    def response_prepared(self, head: bytes) -> None:
        """Answer with no body, from a status line and headers made by encode_head() (the fast path:
        no formatting per request)."""
        self._send(head, b"")

    def _write(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        try:
            head = encode_head(status, headers)
        except ValueError:
            log.error("refusing to write a header with a line break", status=status)
            self._refuse(500)
            return
        self._send(head, body)

    def _send(self, head: bytes, body: bytes, *, close: bool = False) -> None:
        """Write one answer: `head` plus Date, Content-Length and, when the connection ends, a close."""
        if self._transport is None or self._answered:
            return
        self._answered = True
        if close or not self._keep_alive or self._server.closing:
            head += b"connection: close\r\n"
        if body:
            self._transport.write(b"%s%scontent-length: %d\r\n\r\n%s" % (head, self._server.date, len(body), body))
        else:
            self._transport.write(head + self._server.empty_tail)

    def _refuse(self, status: int) -> None:
        """Answer a request the server itself rejects, then close the connection."""
        self._send(_STATUS_LINES[status].encode() + _REFUSAL_HEADERS,
                   f"{HTTPStatus(status).phrase.lower()}\n".encode(), close=True)
        self.close()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class HTTPServer:
    """Listens on one address; `stop()` stops accepting, closes idle connections and waits for the rest."""

    def __init__(self, handler: Handler, *, max_head: int = MAX_HEAD, header_timeout: float = HEADER_TIMEOUT_S,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT_S) -> None:
        self.handler = handler
        self.max_head = max_head
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[Connection] = set()
        self.closing = False
        self.now = time.monotonic()
        self.date = b""
        self.empty_tail = b""  # Date and a zero Content-Length, then the blank line
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tick()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port, backlog=backlog,
                                                reuse_port=reuse_port or None)
        self._ticker = asyncio.create_task(self._tick_every_second(), name="http-ticker")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting; let requests in progress finish (up to `grace_s`), then close everything."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace_s
        while True:
            for conn in list(self.connections):
                if not conn.busy:
                    conn.close()
            if not self.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            await self._server.wait_closed()

    def _tick(self) -> None:
        """Refresh the cached clock and Date header; close connections past their deadline."""
        self.now = time.monotonic()
        self.date = f"date: {formatdate(usegmt=True)}\r\n".encode()
        self.empty_tail = self.date + b"content-length: 0\r\n\r\n"
        for conn in [c for c in self.connections if c.deadline < self.now]:
            conn.close()

    async def _tick_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._tick()
