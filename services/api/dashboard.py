"""The live web dashboard: ``GET /dashboard`` (the page) and its data, ``/v1/dashboard/*``.

One tap per API process feeds every viewer: a consumer without a group reads ``clicks.enriched``
and ``webhooks.attempts`` from their end (nothing committed; a restarted API starts empty), and a
followed ``webhooks.subscriptions`` table says which workspace owns each subscription. The
aggregates live in :mod:`services.api.dashboard_stats` (bounded).

- ``GET /v1/dashboard/snapshot`` — the workspace's current state as JSON (``Authorization: Bearer``).
- ``GET /v1/dashboard/stream`` — server-sent events: ``snapshot`` on connect, then ``update``
  (deltas) at most every ``PUSH_INTERVAL_S``, and a comment line every ``HEARTBEAT_S`` so a gone
  client is noticed. Browsers' EventSource cannot send headers, so this route also takes the key
  as ``?token=``; the page sends ``Referrer-Policy: no-referrer`` and drops the token from its
  address bar. The stream never ends on its own, so it is left out of /openapi.json (fuzzers would
  hang on it) and described on the snapshot operation instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from clickwire.codec import codec_for
from clickwire.follow import TopicTable
from clickwire.kafka import BULK_FETCH
from clickwire.logs import RateLimited
from clickwire.topics import Topic, name
from services.api.context import AUTH_FAILURES, ApiContext
from services.api.dashboard_stats import Board
from services.api.keys import verify
from services.api.problems import Problem, problem_ref

log = structlog.get_logger(__name__)
STATIC = Path(__file__).parent / "static"
PAGES: Final = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
PUSH_INTERVAL_S: Final = 0.5
HEARTBEAT_S: Final = 15.0
MAX_VIEWERS: Final = 200
RETRY_S: Final = 5.0
# The page loads nothing but itself: no CDN, no inline script, and its address (which may hold the
# token) is never sent as a Referer.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
VIEWERS = Gauge("clickwire_dashboard_viewers", "Open dashboard event streams")
TAPPED = Counter("clickwire_dashboard_records_total", "Records the dashboard tap applied", ["topic"])
# The routes built for each context, for on_startup (a context is one per process).
_TAPS: dict[int, DashboardTap] = {}


class DashboardTap:
    """Reads clicks and delivery attempts for the dashboard and serves them to viewers."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        common = ctx.common
        self.board = Board()
        self.clicks_topic = name(Topic.CLICKS_ENRICHED, common.topic_prefix)
        self.attempts_topic = name(Topic.WEBHOOK_ATTEMPTS, common.topic_prefix)
        self._clicks = codec_for(Topic.CLICKS_ENRICHED, common.schema_registry_url)
        self._attempts = codec_for(Topic.WEBHOOK_ATTEMPTS, common.schema_registry_url)
        self.subscriptions = self._table()
        self.ready = asyncio.Event()
        self.tried = asyncio.Event()  # set once the first start attempt succeeded or failed
        self.viewers = 0
        self._bad = RateLimited(5.0)

    def _table(self) -> TopicTable[dict[str, Any]]:
        codec = codec_for(Topic.WEBHOOK_SUBSCRIPTIONS, self.ctx.common.schema_registry_url)
        return TopicTable(self.ctx.common, Topic.WEBHOOK_SUBSCRIPTIONS, codec.decode,
                          on_change=self._subscription)

    def _subscription(self, key: str, _old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        workspace_id = self.board.set_subscription(key, new)
        if workspace_id is not None and workspace_id in self.board.workspaces:
            self.board.workspaces[workspace_id].notify()

    async def _open(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.ctx.common.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="latest", **BULK_FETCH)
        await consumer.start()
        try:
            metadata = await consumer._client.fetch_all_metadata()
            tps: list[TopicPartition] = []
            for topic in (self.clicks_topic, self.attempts_topic):
                partitions = metadata.partitions_for_topic(topic)
                if not partitions:
                    raise RuntimeError(f"topic {topic} has no partitions (does it exist?)")
                tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                # Resolve "the end" now: a record produced after startup must reach the dashboard.
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def run(self) -> None:
        """Follow the topics for the life of the process; a failure restarts the tap after RETRY_S."""
        try:
            while True:
                consumer: AIOKafkaConsumer | None = None
                try:
                    if not self.subscriptions.loaded:
                        await self.subscriptions.stop()
                        self.subscriptions = self._table()  # a fresh one: a half-started table cannot restart
                        await self.subscriptions.start()
                        await self.subscriptions.wait_loaded()
                    consumer = await self._open()
                    self.ready.set()
                    self.tried.set()
                    log.info("dashboard tap following", clicks=self.clicks_topic, attempts=self.attempts_topic)
                    await self._follow(consumer)
                except Exception as exc:
                    self.tried.set()
                    log.warning("dashboard tap stopped; retrying", error=f"{type(exc).__name__}: {exc}",
                                retry_s=RETRY_S)
                finally:
                    if consumer is not None:
                        await consumer.stop()
                await asyncio.sleep(RETRY_S)
        finally:
            await self.subscriptions.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        pruned_at = 0
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            now_s = int(time.time())
            clicks: list[dict[str, Any]] = []
            attempts: list[dict[str, Any]] = []
            for tp, records in batches.items():
                is_click = tp.topic == self.clicks_topic
                codec, into = (self._clicks, clicks) if is_click else (self._attempts, attempts)
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        into.append(codec.decode(record.value))
                    except Exception as exc:  # a poison record is its producer's business, not the page's
                        if self._bad.allow(tp.topic):
                            log.warning("dashboard skipped an undecodable record", topic=tp.topic,
                                        partition=tp.partition, offset=record.offset, error=str(exc))
                TAPPED.labels("clicks" if is_click else "attempts").inc(len(records))
            touched = self.board.add_clicks(clicks, now_s) | self.board.add_attempts(attempts)
            if now_s != pruned_at:
                pruned_at = now_s
                touched |= {ws.id for ws in self.board.workspaces.values() if ws.prune(now_s)}
            for workspace_id in touched:
                ws = self.board.workspaces.get(workspace_id)
                if ws is not None:
                    ws.notify()

    async def events(self, workspace_id: str) -> AsyncIterator[bytes]:
        """The event stream of one viewer: a snapshot, then throttled updates, until it goes away."""
        ws = self.board.workspace(workspace_id)
        ws.viewers += 1
        self.viewers += 1
        VIEWERS.inc()
        try:
            yield f"retry: {int(RETRY_S * 1000)}\n\n".encode()
            changed = ws.waiter()
            state = self.board.snapshot(workspace_id, _now_ms())
            yield _event("snapshot", state)
            version, seq = state["version"], _last_seq(state, 0)
            stopping = self.ctx.stopping
            while not stopping.is_set():
                if not await _first_of(changed, stopping, HEARTBEAT_S):
                    yield b": keep-alive\n\n"  # a write is how a vanished client gets noticed
                    continue
                if stopping.is_set():
                    break  # the server is stopping: end the stream; the browser reconnects elsewhere
                changed = ws.waiter()
                state = self.board.update(workspace_id, version, seq, _now_ms())
                version, seq = state["version"], _last_seq(state, seq)
                yield _event("update", state)
                # The throttle: whatever changes meanwhile goes out together in the next update.
                await asyncio.sleep(PUSH_INTERVAL_S)
        finally:
            ws.viewers -= 1
            self.viewers -= 1
            VIEWERS.dec()


async def _first_of(a: asyncio.Event, b: asyncio.Event, timeout_s: float) -> bool:
    """Wait until either event is set (True) or the timeout passes (False)."""
    waits = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return bool(done)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _last_seq(state: dict[str, Any], seq: int) -> int:
    latest = state["latest"]
    return int(latest[-1]["seq"]) if latest else seq


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _stream_workspace(ctx: ApiContext, request: Request) -> str:
    """The workspace of a stream request: the Authorization header, or ?token= for EventSource."""
    token = request.query_params.get("token")
    if token is None or "authorization" in request.headers:
        return await ctx.authenticate(request)
    key = verify(token.strip(), ctx.keys)
    if key is None:
        AUTH_FAILURES.inc()
        raise Problem(401, "unauthorized", "invalid or revoked API key")
    return key.workspace_id


def routes(ctx: ApiContext) -> list[BaseRoute]:
    """GET /dashboard (+ its script and style), /v1/dashboard/snapshot and /v1/dashboard/stream."""
    tap = DashboardTap(ctx)
    _TAPS[id(ctx)] = tap
    # Read once: a few kilobytes, and no file I/O on the event loop per request.
    files = {file: (STATIC / file).read_bytes() for file in ("dashboard.html", *PAGES)}

    async def page(_: Request) -> Response:
        return Response(files["dashboard.html"], media_type="text/html", headers=PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        file = request.path_params["file"]
        if file not in PAGES:
            raise Problem(404, "not_found", f"no dashboard file {file}")
        return Response(files[file], media_type=PAGES[file], headers=PAGE_HEADERS)

    def check_ready() -> None:
        if not tap.ready.is_set():
            raise Problem(503, "unavailable", "the dashboard is not following clicks yet; retry")

    async def snapshot(request: Request) -> Response:
        workspace_id = await ctx.authenticate(request)
        check_ready()
        return Response(orjson.dumps(tap.board.snapshot(workspace_id, _now_ms())), media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    async def stream(request: Request) -> Response:
        workspace_id = await _stream_workspace(ctx, request)
        check_ready()
        if tap.viewers >= MAX_VIEWERS:
            raise Problem(503, "unavailable", f"{MAX_VIEWERS} dashboards are open on this API process; retry")
        return StreamingResponse(tap.events(workspace_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/{file}", asset, methods=["GET"]),
        Route("/v1/dashboard/snapshot", snapshot, methods=["GET"]),
        Route("/v1/dashboard/stream", stream, methods=["GET"]),
    ]


async def on_startup(ctx: ApiContext, ready_timeout_s: float = 15.0) -> None:
    """Start the tap and wait for its first try, so that once it succeeds every click from now on is shown."""
    tap = _TAPS.get(id(ctx))
    if tap is None or tap.ctx is not ctx:
        return
    ctx.background(tap.run(), "dashboard-tap")
    with contextlib.suppress(TimeoutError):
        # A failure is not fatal: the API serves links without the dashboard, and the tap keeps retrying.
        await asyncio.wait_for(tap.tried.wait(), ready_timeout_s)


# ---- OpenAPI -------------------------------------------------------------------------------------

_COUNTS = {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "DashboardState": {
        "type": "object",
        "description": "A workspace's last ten minutes. Buckets are per second (t = epoch seconds).",
        "required": ["kind", "workspace", "window_s", "now_ms", "version", "buckets", "latest", "totals",
                     "webhooks"],
        "properties": {
            "kind": {"type": "string", "enum": ["snapshot", "update"]},
            "workspace": {"type": "string"},
            "window_s": {"type": "integer"},
            "now_ms": {"type": "integer"},
            "version": {"type": "integer"},
            "buckets": {"type": "array", "items": {"type": "object", "properties": {
                "t": {"type": "integer"}, "humans": {"type": "integer"}, "bots": {"type": "integer"},
                "links": {"type": "object", "additionalProperties": {"type": "integer"}},
                "campaigns": {"type": "object", "additionalProperties": {"type": "integer"}}}}},
            "latest": {"type": "array", "items": {"type": "object"},
                       "description": "Latest clicks, oldest first: link, campaign, country, device, "
                                      "is_bot, bot_kind, trust, signals."},
            "totals": {"type": "object", "properties": {
                "clicks": {"type": "integer"}, "humans": {"type": "integer"}, "bots": {"type": "integer"},
                "bot_kinds": {"type": "object", "additionalProperties": {"type": "integer"}},
                "countries": _COUNTS, "links": _COUNTS, "campaigns": _COUNTS}},
            "webhooks": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "url": {"type": "string"}, "successes": {"type": "integer"},
                "failures": {"type": "integer"}, "last_status": {"type": ["integer", "null"]},
                "last_latency_ms": {"type": ["number", "null"]}, "last_outcome": {"type": ["string", "null"]}}}},
        },
    },
}
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/dashboard/snapshot": {
        "get": {
            "operationId": "dashboardSnapshot", "tags": ["dashboard"], "security": [{"bearer": []}],
            "summary": "The workspace's live dashboard state (last ten minutes)",
            "description": "The same document `GET /v1/dashboard/stream` sends as its first server-sent "
                           "event (`event: snapshot`); the stream then sends `event: update` with the buckets "
                           "and clicks that changed, at most twice a second. The stream takes the key as "
                           "`Authorization: Bearer` or, for EventSource, as `?token=`. The page is `/dashboard`.",
            "responses": {
                "200": {"description": "The state.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DashboardState"}}}},
                "401": problem_ref("Missing or invalid API key (reason unauthorized)."),
                "503": problem_ref("The dashboard tap is not following the topics yet (reason unavailable)."),
            },
        },
    },
}
