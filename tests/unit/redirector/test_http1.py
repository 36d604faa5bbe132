"""The redirector's HTTP/1.1 server on a real loopback socket, driven with raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.redirector.http1 import MAX_BODY, Connection, HTTPServer, Request, Responder, encode_head

Answer = tuple[int, dict[str, str], bytes]


class Recorder:
    """A handler that answers 302 with what it read, or misbehaves on request."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def __call__(self, request: Request, proto: Responder) -> None:
        self.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/silent":
            return
        if request.path == "/inject":
            proto.response_empty(302, [("location", "https://example.com/\r\nset-cookie: x=1")])
            return
        if request.path == "/ua":
            try:
                ua = request.headers.get("user-agent", "")
            except UnicodeDecodeError:
                proto.response_str(400, [], "bad header\n")
                return
            proto.response_str(200, [], ua)
            return
        proto.response_empty(302, [("location", f"https://example.com{request.path}")])


@pytest.fixture
async def server() -> AsyncIterator[tuple[HTTPServer, Recorder]]:
    handler = Recorder()
    srv = HTTPServer(handler, header_timeout=0.3, keepalive_timeout=0.6)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv, handler
    finally:
        await srv.stop(grace_s=0.5)


async def _connect(srv: HTTPServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def _answer(reader: asyncio.StreamReader) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


async def _closed(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (waits up to 5 s)."""
    with contextlib.suppress(ConnectionResetError):
        while await asyncio.wait_for(reader.read(65536), 5):
            pass
    return True


async def _one(srv: HTTPServer, raw: bytes) -> tuple[Answer, bool]:
    reader, writer = await _connect(srv)
    writer.write(raw)
    answer = await _answer(reader)
    closed = await _closed(reader) if answer[1].get("connection") == "close" else False
    writer.close()
    return answer, closed


async def test_keep_alive_answers_every_request_on_one_connection(server: tuple[HTTPServer, Recorder]) -> None:
    srv, handler = server
    reader, writer = await _connect(srv)
    for code in ("a", "b", "c"):
        writer.write(f"GET /{code}?q=1 HTTP/1.1\r\nHost: go.example\r\nUser-Agent: t\r\n\r\n".encode())
        status, headers, body = await _answer(reader)
        assert (status, headers["location"], body) == (302, f"https://example.com/{code}", b"")
        assert "connection" not in headers
        assert headers["date"].endswith("GMT")
    writer.close()
    first = handler.requests[0]
    assert (first.method, first.path, first.query_string, first.headers["host"], first.authority) == \
        ("GET", "/a", "q=1", "go.example", None)
    assert first.client == "127.0.0.1"  # the peer's address, without its port


async def test_pipelined_requests_are_answered_in_order(server: tuple[HTTPServer, Recorder]) -> None:
    srv, _ = server
    reader, writer = await _connect(srv)
    writer.write(b"".join(f"HEAD /p{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(20)))
    locations = [(await _answer(reader))[1]["location"] for _ in range(20)]
    assert locations == [f"https://example.com/p{i}" for i in range(20)]
    writer.close()


@pytest.mark.parametrize("raw", [
    b"GET /a HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
])
async def test_connection_close_and_http10_close_after_the_answer(server: tuple[HTTPServer, Recorder],
                                                                  raw: bytes) -> None:
    srv, _ = server
    (status, headers, _), closed = await _one(srv, raw)
    assert status == 302
    assert headers["connection"] == "close"
    assert closed


@pytest.mark.parametrize("closing", ["client", "server"])
async def test_nothing_after_a_closing_request_is_answered(server: tuple[HTTPServer, Recorder], closing: str) -> None:
    """Requests pipelined behind the one a connection closes after get no answer and reach no handler
    (no click): behind `Connection: close` llhttp (strict) refuses the rest; while the server stops,
    the requests are keep-alive and the connection itself drops what it parses after closing."""
    srv, handler = server
    reader, writer = await _connect(srv)
    if closing == "server":
        srv.closing = True  # what stop() sets first
    first = b"Connection: close\r\n" if closing == "client" else b""
    writer.write(b"GET /first HTTP/1.1\r\nHost: h\r\n" + first + b"\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, _ = await _answer(reader)
    assert (status, headers["location"], headers["connection"]) == (302, "https://example.com/first", "close")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert [r.path for r in handler.requests] == ["/first"]
    writer.close()


async def test_absolute_form_gives_path_query_and_authority(server: tuple[HTTPServer, Recorder]) -> None:
    srv, handler = server
    (status, _, _), _ = await _one(srv, b"GET http://go.example/abc?x=1 HTTP/1.1\r\nHost: go.example\r\n\r\n")
    assert status == 302
    r = handler.requests[-1]
    assert (r.path, r.query_string, r.authority) == ("/abc", "x=1", "go.example")


@pytest.mark.parametrize(("raw", "want"), [
    (b"GET /a HTTP/1.1\r\nHost: h\r\n" + b"X-Pad: " + b"x" * 20_000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET /a HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400),
    # request smuggling shapes: the parser is strict (llhttp without leniencies)
    (b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n"
     + b"x" * (MAX_BODY + 1), 413),
])
async def test_bad_requests_get_a_4xx_and_the_connection_is_closed(server: tuple[HTTPServer, Recorder],
                                                                   raw: bytes, want: int) -> None:
    srv, handler = server
    (status, headers, body), closed = await _one(srv, raw)
    assert (status, headers["connection"], closed) == (want, "close", True)
    assert body.endswith(b"\n")
    assert not handler.requests


async def test_a_header_that_is_not_utf8_raises_only_when_read(server: tuple[HTTPServer, Recorder]) -> None:
    srv, _ = server
    (status, _, body), _ = await _one(srv, b"GET /ua HTTP/1.1\r\nHost: h\r\nUser-Agent: \xff\xfe\r\n\r\n")
    assert (status, body) == (400, b"bad header\n")
    (status, _, body), _ = await _one(srv, b"GET /ua HTTP/1.1\r\nHost: h\r\nX-Other: \xff\r\nUser-Agent: ok\r\n\r\n")
    assert (status, body) == (200, b"ok")


@pytest.mark.parametrize("path", ["/boom", "/silent", "/inject"])
async def test_a_handler_that_fails_gets_500_and_the_server_goes_on(server: tuple[HTTPServer, Recorder],
                                                                    path: str) -> None:
    srv, _ = server
    (status, headers, _), closed = await _one(srv, f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert (status, closed) == (500, True)
    assert "set-cookie" not in headers
    (status, _, _), _ = await _one(srv, b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 302


async def test_slow_heads_and_idle_connections_are_closed(server: tuple[HTTPServer, Recorder]) -> None:
    srv, _ = server
    slow_reader, slow = await _connect(srv)
    slow.write(b"GET /a HTTP/1.1\r\nHo")  # never finished: closed after header_timeout
    idle_reader, idle = await _connect(srv)
    idle.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await _answer(idle_reader))[0] == 302  # then idle: closed after keepalive_timeout
    assert await _closed(slow_reader)
    assert await _closed(idle_reader)
    assert await _wait_for(lambda: not srv.connections)
    slow.close()
    idle.close()


async def test_stop_closes_idle_connections_and_the_listener() -> None:
    srv = HTTPServer(Recorder())
    await srv.start("127.0.0.1", 0)
    port = srv.port
    reader, writer = await _connect(srv)
    writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await _answer(reader))[0] == 302
    await srv.stop(grace_s=1.0)
    assert await _closed(reader)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.close()


def test_a_client_that_does_not_read_is_not_read_from() -> None:
    """Back-pressure: when the transport's write buffer is full, reading pauses until it drains."""

    class Transport:
        def __init__(self) -> None:
            self.reading = True

        def get_extra_info(self, name: str) -> Any:
            return ("127.0.0.1", 5000)

        def pause_reading(self) -> None:
            self.reading = False

        def resume_reading(self) -> None:
            self.reading = True

    conn = Connection(HTTPServer(Recorder()))
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.pause_writing()
    assert not transport.reading
    conn.resume_writing()
    assert transport.reading


async def _wait_for(condition: Any, within_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_encode_head_refuses_header_injection() -> None:
    """A line break in a header (a destination someone smuggled one into) is never written."""
    assert encode_head(302, [("location", "https://a.example/")]) == \
        b"HTTP/1.1 302 Found\r\nlocation: https://a.example/\r\n"
    for bad in ("https://a.example/\r\nset-cookie: x=1", "https://a.example/\nx", "https://a.example/\rx"):
        with pytest.raises(ValueError, match="line break"):
            encode_head(302, [("location", bad)])
