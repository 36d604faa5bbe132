"""The control API's Starlette app, assembled from resource modules.

Contract for resource modules (``services.api.links`` and ``services.api.keys`` here;
``services.api.webhooks`` and ``services.api.dashboard`` are mounted when importable):

- ``def routes(ctx: ApiContext) -> list[BaseRoute]`` — required. Handlers find the context at
  ``request.app.state.ctx`` (or close over ``ctx``), call ``await ctx.authenticate(request)`` on
  every /v1 route (it returns the workspace id or raises a 401 Problem), read bodies with
  ``services.api.body.read_json`` + ``validate`` and refuse with ``services.api.problems.Problem``;
  the app turns a Problem into ``application/problem+json``.
- ``OPENAPI_PATHS: dict`` and ``OPENAPI_SCHEMAS: dict`` — optional; merged into /openapi.json
  (schemas under ``#/components/schemas``; ``Problem`` is already there, security scheme
  ``bearer`` too).
- ``async def on_startup(ctx: ApiContext) -> None`` — optional; runs once the context is started
  (use ``ctx.background(coro, name)`` for work that lives as long as the process).

The app also serves ``GET /health``, ``/metrics``, ``/openapi.json`` (OpenAPI 3.1) and ``/docs``
(a self-contained page, nothing loaded from the internet).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import orjson
import structlog
import uvicorn
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clickwire.observability import metrics_response
from services.api.context import ApiContext
from services.api.docs import DOCS_HTML
from services.api.problems import PROBLEM_SCHEMA, Problem, problem_ref

log = structlog.get_logger(__name__)
REQUESTS = Counter("clickwire_api_requests_total", "API requests", ["method", "status"])
LATENCY = Histogram("clickwire_api_request_seconds", "API request latency",
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

RESOURCE_MODULES = ("services.api.links", "services.api.keys", "services.api.webhooks",
                    "services.api.dashboard", "services.api.settings_routes")
_REQUIRED_MODULES = frozenset({"services.api.links", "services.api.keys"})


def resource_modules() -> list[ModuleType]:
    """The resource modules present in this checkout (a missing optional one is skipped)."""
    found = []
    for module_name in RESOURCE_MODULES:
        try:
            found.append(importlib.import_module(module_name))
        except ModuleNotFoundError as exc:
            # Absent means not built yet; a broken import inside a present module is an error.
            if module_name in _REQUIRED_MODULES or exc.name != module_name:
                raise
    return found


# Answers the app gives on any secured route (authenticate) or any route with a body (read_json and
# the size guard), so a module need not repeat them; one it declares itself is kept as it wrote it.
_SECURED_RESPONSES: dict[str, Any] = {"401": problem_ref("Missing or invalid API key (reason unauthorized).")}
_BODY_RESPONSES: dict[str, Any] = {
    "400": problem_ref("The body is not valid JSON (reason invalid_json)."),
    "413": problem_ref("Body too large (reason body_too_large)."),
    "415": problem_ref("The body is not JSON (reason unsupported_media_type)."),
}


def _with_common_responses(operation: Any) -> Any:
    if not isinstance(operation, dict) or "responses" not in operation:
        return operation  # a path-level "parameters" list, not an operation
    common = {**(_SECURED_RESPONSES if operation.get("security") else {}),
              **(_BODY_RESPONSES if "requestBody" in operation else {})}
    return {**operation, "responses": {**common, **operation["responses"]}}


def openapi_document(modules: list[ModuleType]) -> dict[str, Any]:
    """The OpenAPI 3.1 document: every module's paths and schemas merged."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    for module in modules:
        for path, ops in getattr(module, "OPENAPI_PATHS", {}).items():
            paths.setdefault(path, {}).update({key: _with_common_responses(op) for key, op in ops.items()})
        schemas.update(getattr(module, "OPENAPI_SCHEMAS", {}))
    return {
        "openapi": "3.1.0",
        "info": {"title": "clickwire control API", "version": "1",
                 "description": "Links, webhooks and keys. Every /v1 route needs `Authorization: Bearer "
                                "<API key>` (create one with `clickwire keys create`). Errors are "
                                "application/problem+json with a machine-readable `reason`."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "cw_<id>.<secret>"}}},
    }


class _Guard:
    """Counts requests and refuses a declared oversized body before any route reads it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body_bytes:
                response = Problem(413, "body_too_large", f"body exceeds {self.max_body_bytes} bytes").response()
                await response(scope, receive, counting_send)
                return
            await self.app(scope, receive, counting_send)
        finally:
            REQUESTS.labels(scope["method"], str(status)).inc()
            LATENCY.observe(time.perf_counter() - started)


async def _problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return Problem(exc.status_code, reason, str(exc.detail)).response()


async def _kafka_error(_: Request, exc: Exception) -> Response:
    log.warning("broker error while handling a request", error=f"{type(exc).__name__}: {exc}")
    return Problem(503, "unavailable", "the broker did not accept the write; retry").response()


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.error("unhandled error", error=f"{type(exc).__name__}: {exc}")
    return Problem(500, "internal_error", "unexpected error").response()


def build_app(ctx: ApiContext) -> Starlette:
    """The API app for a started (or about to be started) context."""
    modules = resource_modules()
    document = orjson.dumps(openapi_document(modules))

    async def health(_: Request) -> Response:
        detail = await ctx.health()
        return Response(orjson.dumps(detail), status_code=200 if detail["ok"] else 503,
                        media_type="application/json")

    async def metrics(_: Request) -> Response:
        body, ctype = metrics_response()
        return Response(body, headers={"Content-Type": ctype})

    async def openapi(_: Request) -> Response:
        return Response(document, media_type="application/json")

    async def docs(_: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for module in modules:
            hook = getattr(module, "on_startup", None)
            if hook is not None:
                await hook(ctx)
        yield

    routes: list[Any] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    for module in modules:
        routes.extend(module.routes(ctx))
    app = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={Problem: _problem, HTTPException: _http_error, KafkaError: _kafka_error,
                            Exception: _unexpected},
    )
    app.state.ctx = ctx
    app.add_middleware(_Guard, max_body_bytes=ctx.settings.max_body_bytes)
    return app


class _QuietServer(uvicorn.Server):
    # clickwire.service owns SIGTERM/SIGINT (stop event -> graceful drain); uvicorn must not replace them.
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class ApiServer:
    """uvicorn serving the API app on host:port (port 0 picks a free one) inside the current loop."""

    def __init__(self, ctx: ApiContext, host: str, port: int) -> None:
        config = uvicorn.Config(build_app(ctx), host=host, port=port, log_config=None, access_log=False,
                                lifespan="on", server_header=False, timeout_graceful_shutdown=10)
        self._server = _QuietServer(config)
        self._ctx = ctx
        self._host = host
        self._task: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> None:
        """Bind and start serving; raises OSError when the address is taken."""
        # Bound here rather than by uvicorn: a taken port is an OSError we can report (uvicorn
        # would sys.exit inside a task), and port 0 tells us the port it picked.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(2048)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError("the API server stopped before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (event streams end at once), return."""
        self._ctx.stopping.set()
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    @property
    def done(self) -> bool:
        """True when the server task ended (on its own or stopped)."""
        return self._task is not None and self._task.done()
