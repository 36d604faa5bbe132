"""Read-only SQL over HTTP, plus /health and /metrics, served by the process that owns ClickHouse.

In embedded mode only the sink may open the chdb data directory, so everyone else (analysts'
`clickwire sql`, the API's attempt listing and dashboard) reads through here:

- `GET /sql?query=SELECT...&param_ws=abc` (parameters as in ClickHouse's own HTTP interface), or
- `POST /sql` with JSON `{"query": "...", "params": {"ws": "abc"}}` (or the SQL as a text body).

The answer is JSON `{"meta": [{"name", "kind"}], "data": [{column: value}], "rows", "truncated",
"elapsed_ms"}`; `kind` is "datetime" or "date" for columns whose values are ISO strings in JSON,
else null. Every query goes through `store.query_readonly` (a lexical guard plus readonly=1).
Errors: 400 for a query ClickHouse refuses, 403 for anything but a read, 503 when ClickHouse is
unavailable; the body is `{"error": message, "code": clickhouse_code}`.

The endpoint has no authentication: it listens on 127.0.0.1 unless CLICKWIRE_SINK_HOST says
otherwise. Queries share the engine with the writer, so a long analyst query delays inserts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import orjson
from aiohttp import web

from clickwire.clickhouse import ClickHouseStore, ClickHouseUnavailable, QueryError, ReadOnlyViolation
from clickwire.observability import metrics_response

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]
_MAX_BODY = 1 << 20


def _kind(rows: list[dict[str, Any]], column: str) -> str | None:
    for row in rows:
        value = row[column]
        if value is None:
            continue
        if isinstance(value, datetime):
            return "datetime"
        return "date" if isinstance(value, date) else None
    return None


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


class SqlServer:
    """Serves /sql (read-only), /health and /metrics on host:port."""

    def __init__(self, store: ClickHouseStore, health: HealthCheck, *, host: str = "127.0.0.1",
                 port: int = 0, max_rows: int = 100_000) -> None:
        self._store = store
        self._health = health
        self._host = host
        self._max_rows = max_rows
        self._runner: web.AppRunner | None = None
        self.port = port

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://{self._host}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application (for embedding or tests)."""
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("GET", "/sql", self._sql)
        app.router.add_route("POST", "/sql", self._sql)
        app.router.add_get("/health", self._health_route)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        """Bind and serve; `port` holds the bound port afterwards (useful with port 0)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _read_request(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        if request.method == "GET":
            params = {k[len("param_"):]: v for k, v in request.query.items() if k.startswith("param_")}
            return request.query.get("query", ""), params
        body = await request.read()
        if request.content_type == "application/json":
            payload = orjson.loads(body)
            if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
                raise ValueError('expected a JSON object {"query": "...", "params": {...}}')
            params = payload.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError('"params" must be an object')
            return payload["query"], params
        return body.decode("utf-8"), {k[len("param_"):]: v for k, v in request.query.items()
                                      if k.startswith("param_")}

    async def _sql(self, request: web.Request) -> web.Response:
        try:
            sql, params = await self._read_request(request)
        except (ValueError, UnicodeDecodeError) as exc:
            return _json({"error": f"bad request: {exc}", "code": None}, 400)
        if not sql.strip():
            return _json({"error": "no query: pass ?query=... or POST the SQL", "code": None}, 400)
        started = time.perf_counter()
        try:
            rows = await self._store.query_readonly(sql, params)
        except ReadOnlyViolation as exc:
            return _json({"error": str(exc), "code": exc.code}, 403)
        except QueryError as exc:
            return _json({"error": str(exc), "code": exc.code}, 400)
        except ClickHouseUnavailable as exc:
            return _json({"error": str(exc), "code": None}, 503)
        truncated = len(rows) > self._max_rows
        rows = rows[: self._max_rows]
        columns = list(rows[0]) if rows else []
        return _json({
            "meta": [{"name": c, "kind": _kind(rows, c)} for c in columns],
            "data": rows,
            "rows": len(rows),
            "truncated": truncated,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
        })

    async def _health_route(self, _: web.Request) -> web.Response:
        try:
            detail = await self._health()
            ok = bool(detail.get("ok", True))
        except Exception as exc:  # a failing check is a 503, never a crash of the server
            detail, ok = {"ok": False, "error": type(exc).__name__}, False
        return _json(detail, 200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body, ctype = metrics_response()
        return web.Response(body=body, headers={"Content-Type": ctype})
