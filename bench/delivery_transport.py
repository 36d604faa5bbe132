"""Requests/s of webhook-shaped POSTs: bare aiohttp, VettedTransport, and httpx over three transports.

Usage: python -m bench.delivery_transport [--requests 20000] [--concurrency 64]

The receiver is a raw asyncio HTTP/1.1 keep-alive server in a separate process answering 204, so
the client side is what is measured. Every client POSTs the same 300-byte JSON body.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from services.dispatcher.transport import VettedTransport

BODY = b'{"id":"evt_0","type":"click","data":{"pad":"' + b"x" * 253 + b'"}}'
assert len(BODY) == 300
RESPONSE = b"HTTP/1.1 204 No Content\r\nServer: bench\r\n\r\n"


class _Receiver(asyncio.Protocol):
    """Answers each request with a 204, parsing only the header end and Content-Length."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(RESPONSE)


def _serve(port_out: multiprocessing.connection.Connection) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Receiver, "127.0.0.1", 0, backlog=1024)
        port_out.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def _drive(send: Callable[[], Awaitable[int]], total: int, concurrency: int) -> float:
    """Return requests/s for ``total`` sends by ``concurrency`` workers (after a warm-up of one round)."""
    await asyncio.gather(*(send() for _ in range(concurrency)))
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            status = await send()
            if status != 204:
                raise RuntimeError(f"unexpected status {status}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def run(port: int, total: int, concurrency: int) -> dict[str, float]:
    """Return requests/s per client kind against the receiver on ``port``."""
    url = f"http://127.0.0.1:{port}/hook"
    headers = {"content-type": "application/json", "webhook-id": "evt_0"}
    results: dict[str, float] = {}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def bare() -> int:
            async with session.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
                return resp.status

        results["aiohttp (bare keep-alive loop)"] = await _drive(bare, total, concurrency)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = {
        "httpx default pool": httpx.AsyncClient(limits=limits),
        "httpx over httpx-aiohttp": httpx.AsyncClient(transport=AiohttpTransport(limits=limits)),
        "httpx over VettedTransport": httpx.AsyncClient(
            transport=VettedTransport(
                allow_nets=[ipaddress.ip_network("127.0.0.0/8")], max_connections=concurrency
            )
        ),
    }
    async with VettedTransport(
        allow_nets=[ipaddress.ip_network("127.0.0.0/8")], max_connections=concurrency
    ) as transport:

        async def fast_path() -> int:
            return (await transport.post(url, BODY, headers)).status

        results["VettedTransport.post (no httpx)"] = await _drive(fast_path, total, concurrency)

    for name, client in clients.items():
        async with client:

            async def via_httpx(client: httpx.AsyncClient = client) -> int:
                return (await client.post(url, content=BODY, headers=headers)).status_code

            results[name] = await _drive(via_httpx, total, concurrency)
    return results


def main() -> None:
    """Start the receiver, measure each client, print a table with ratios to bare aiohttp."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        results = asyncio.run(run(port, args.requests, args.concurrency))
    finally:
        server.terminate()
        server.join()
    baseline = next(iter(results.values()))
    print(f"{args.requests} POSTs of {len(BODY)} B, {args.concurrency} concurrent, receiver answers 204")
    print(f"{'client':<32} {'req/s':>10} {'vs aiohttp':>11}")
    for name, rate in results.items():
        print(f"{name:<32} {rate:>10,.0f} {rate / baseline:>10.2f}x")


if __name__ == "__main__":
    main()
