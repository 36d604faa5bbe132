"""The webhook HTTP transport: httpx's API over an aiohttp connection pool that only reaches vetted addresses.

Why aiohttp underneath: on this machine class httpx's own pool delivers ~540-1,400 req/s, aiohttp
~12,700 (bench/delivery_transport.py measures it). Why a custom resolver: aiohttp calls it for every
new connection and connects to exactly the addresses it returns, so the address that was vetted is
the address connected to (no second lookup a rebinding DNS server could answer differently), while
the URL keeps the host name for the Host header, TLS SNI and certificate check.

Errors: SSRFError (services.dispatcher.ssrf) when the destination is refused, otherwise httpx's
exception tree (ConnectTimeout, ReadTimeout, ConnectError, RemoteProtocolError, ReadError, ...).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from services.dispatcher.ssrf import IPNetwork, Resolver, SSRFError, VettedTarget, resolve_and_vet, vet_url

DEFAULT_CONNECT_TIMEOUT_S = 3.0
DEFAULT_TOTAL_TIMEOUT_S = 10.0
DEFAULT_MAX_BODY_BYTES = 4096
_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_VET_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Exchange:
    """One response as the deliverer needs it: status, headers, at most ``max_body_bytes`` of body."""

    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    truncated: bool
    http_version: bytes
    reason: str


class VettingResolver(AbstractResolver):
    """An aiohttp resolver that returns only addresses ``resolve_and_vet`` accepted, or raises SSRFError."""

    def __init__(self, *, allow_nets: Collection[IPNetwork] = (), resolver: Resolver | None = None) -> None:
        self._allow_nets = tuple(allow_nets)
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the vetted addresses of ``host`` in aiohttp's format (numeric, so never looked up again)."""
        ips = await resolve_and_vet(host, port, allow_nets=self._allow_nets, resolver=self._resolver)
        results: list[ResolveResult] = []
        for ip in ips:
            ip_family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family not in (socket.AF_UNSPEC, ip_family):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": str(ip),
                    "port": port,
                    "family": ip_family,
                    "proto": socket.IPPROTO_TCP,
                    "flags": _NUMERIC_FLAGS,
                }
            )
        if not results:
            raise SSRFError("no_address", f"{host} has no address of family {family!r}")
        return results

    async def close(self) -> None:
        """Release nothing: the resolver holds no resources."""


def _map_error(exc: BaseException) -> Exception:
    """Return the httpx exception that stands for an aiohttp or asyncio failure."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, TimeoutError):
        return httpx.TimeoutException(f"total timeout: {message}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return httpx.ReadError(message)
    return httpx.TransportError(message)


class VettedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to vetted addresses, never follows redirects and caps bodies.

    Timeouts are the transport's (connect and total); httpx's per-request timeout is not consulted.
    The response body is read up to ``max_body_bytes``; a longer body is dropped with its connection
    and the response carries ``extensions["truncated"] = True``.
    """

    def __init__(
        self,
        *,
        allow_nets: Collection[IPNetwork] = (),
        allowed_ports: Collection[int] | None = None,
        resolver: Resolver | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_connections: int = 1000,
        max_connections_per_host: int = 0,
        keepalive_expiry_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._allow_nets = tuple(allow_nets)
        self._allowed_ports = None if allowed_ports is None else frozenset(allowed_ports)
        self._resolver = resolver
        self._timeout = aiohttp.ClientTimeout(total=total_timeout_s, sock_connect=connect_timeout_s)
        self._max_body = max_body_bytes
        self._limits = (max_connections, max_connections_per_host, keepalive_expiry_s)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        # Vetting a URL's origin is pure, so its result is cached; addresses are vetted per connection.
        self._vetted: dict[tuple[str, bytes, int | None], VettedTarget] = {}
        self._vetted_urls: dict[str, URL] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            limit, per_host, keepalive = self._limits
            connector = aiohttp.TCPConnector(
                resolver=VettingResolver(allow_nets=self._allow_nets, resolver=self._resolver),
                # No connector DNS cache: every new connection asks (and so vets) again.
                use_dns_cache=False,
                limit=limit,
                limit_per_host=per_host,
                keepalive_timeout=keepalive,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # an environment proxy would connect on our behalf, unvetted
                cookie_jar=aiohttp.DummyCookieJar(),  # one subscription's cookies are not another's
                timeout=self._timeout,
                auto_decompress=True,
            )
        return self._session

    def _vet(self, url: httpx.URL) -> VettedTarget:
        if url.userinfo:
            raise SSRFError("credentials")
        key = (url.scheme, url.raw_host, url.port)
        target = self._vetted.get(key)
        if target is None:
            host = url.raw_host.decode("ascii")
            netloc = f"[{host}]" if ":" in host else host
            port = f":{url.port}" if url.port is not None else ""
            target = vet_url(
                f"{url.scheme}://{netloc}{port}/",
                allow_nets=self._allow_nets,
                allowed_ports=self._allowed_ports,
            )
            if len(self._vetted) >= _VET_CACHE_MAX:
                self._vetted.clear()
            self._vetted[key] = target
        return target

    async def _exchange(
        self,
        method: str,
        url: URL,
        headers: Iterable[tuple[str, str]] | Mapping[str, str],
        body: bytes | None,
    ) -> Exchange:
        """Send one request over the vetted pool and return what came back, mapping failures to httpx's."""
        try:
            resp = await self._get_session().request(
                method, url, headers=headers, data=body, allow_redirects=False
            )
            try:
                content = bytearray()
                while len(content) < self._max_body:
                    chunk = await resp.content.read(self._max_body - len(content))
                    if not chunk:
                        break
                    content += chunk
                truncated = not resp.content.at_eof()
            except BaseException:
                resp.close()
                raise
            if truncated:
                resp.close()  # unread bytes would poison the keep-alive connection
            else:
                resp.release()
        except SSRFError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc) from exc
        return Exchange(
            status=resp.status,
            raw_headers=resp.raw_headers,
            body=bytes(content),
            truncated=truncated,
            http_version=b"HTTP/%d.%d" % (resp.version.major, resp.version.minor) if resp.version else b"",
            reason=resp.reason or "",
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a vetted address and return its status, headers and capped body."""
        target = self._vet(request.url)
        url = request.url
        if target.ip is not None and url.raw_host.decode("ascii") != target.host:
            url = url.copy_with(host=target.host)  # a numeric form like 0x7f.1, written canonically
        try:
            body: bytes | None = request.content or None
        except httpx.RequestNotRead:
            body = await request.aread() or None
        got = await self._exchange(
            request.method, URL(str(url), encoded=True), request.headers.multi_items(), body
        )
        # The body was decompressed by aiohttp, so its encoding header no longer describes it.
        headers = [(k, v) for k, v in got.raw_headers if k.lower() != b"content-encoding"]
        extensions: dict[str, Any] = {
            "http_version": got.http_version,
            "reason_phrase": got.reason.encode("latin-1", "replace"),
            "truncated": got.truncated,
        }
        return httpx.Response(
            got.status, headers=headers, stream=httpx.ByteStream(got.body), extensions=extensions
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Exchange:
        """POST ``body`` to ``url`` through the same vetting and pool, without httpx's per-request objects.

        The deliverer's hot path: httpx's client builds and parses a Request and a Response per call,
        which costs more than the HTTP exchange itself at thousands of deliveries per second.
        """
        cached = self._vetted_urls.get(url)
        if cached is None:
            target = vet_url(url, allow_nets=self._allow_nets, allowed_ports=self._allowed_ports)
            cached = URL(target.url)
            if len(self._vetted_urls) >= _VET_CACHE_MAX:
                self._vetted_urls.clear()
            self._vetted_urls[url] = cached
        return await self._exchange("POST", cached, headers, body)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            # Let aiohttp finish closing transports so no ResourceWarning fires after the loop ends.
            await asyncio.sleep(0)
