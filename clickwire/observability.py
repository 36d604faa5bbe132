"""Health and Prometheus metrics over HTTP for services that are not HTTP servers themselves.

The API and the redirector mount :func:`metrics_response` on their own apps; the enricher and
dispatcher run :class:`HealthServer` on ``CLICKWIRE_METRICS_PORT``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

HealthCheck = Callable[[], Awaitable[dict[str, object]]]


def metrics_response() -> tuple[bytes, str]:
    """The current Prometheus exposition and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


class HealthServer:
    """Serves GET /health (200 when the check passes, 503 otherwise) and GET /metrics."""

    def __init__(self, check: HealthCheck, host: str = "127.0.0.1", port: int = 0) -> None:
        self._check = check
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = port

    async def _health(self, _: web.Request) -> web.Response:
        try:
            detail = await self._check()
            ok = bool(detail.get("ok", True))
        except Exception as exc:  # a failing check is a 503, never a crash of the server
            detail, ok = {"ok": False, "error": type(exc).__name__}, False
        return web.json_response(detail, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body, ctype = metrics_response()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def start(self) -> None:
        """Bind and serve; ``self.port`` holds the bound port afterwards."""
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
