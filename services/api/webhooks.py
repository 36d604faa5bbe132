"""``/v1/webhooks``: subscriptions (CRUD), secret rotation, test pings, the attempt log and replay.

Subscriptions live on the compacted webhooks.subscriptions topic (key = subscription id); this
module follows it in a :class:`~clickwire.follow.TopicTable` of its own, started with the first
request and stopped with the API. Every write is acknowledged by the broker and then seen applied
by the table before the API answers, so a client reads its own writes.

URLs are vetted at create and update with the dispatcher's SSRF guard (static checks, then one
resolution whose every address must be public); the dispatcher vets again at every connection,
since DNS answers change. Refusals are 422 with ``reason`` = the guard's code (loopback, metadata,
private, internal_name, dns_failure, port, scheme, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clickwire.codec import codec_for
from clickwire.follow import TopicTable
from clickwire.settings import Env
from clickwire.topics import Topic, name
from services.api.attempts import AttemptPage, SqlSource, attempts_page, parse_limit
from services.api.body import openapi_schemas, read_json, validate
from services.api.context import ApiContext
from services.api.problems import PROBLEM_SCHEMA, Problem, problem_ref
from services.api.replay import ReplayQueued, replay, replay_request
from services.api.subscriptions import (
    PingQueued,
    ReplayBody,
    RotateSecret,
    SecretRotated,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookPatch,
    build_subscription,
    patch_subscription,
    previous_expiries,
    public_view,
    rotate_secret,
)
from services.dispatcher.payload import ping_event
from services.dispatcher.signing import new_secret
from services.dispatcher.ssrf import IPNetwork, Resolver, SSRFError, resolve_and_vet, vet_url
from services.sink.client import SqlClient

log = structlog.get_logger(__name__)
Record = dict[str, Any]
DEFAULT_SINK_URL = "http://127.0.0.1:9102"
# The store of each context routes() was built for, for on_startup (a context is one per process).
_STORES: dict[int, WebhookStore] = {}


@dataclass(frozen=True)
class WebhookApiSettings:
    """What the webhook routes read beyond ApiSettings; the CLICKWIRE_WEBHOOK_* ones are the dispatcher's too."""

    allow_nets: tuple[IPNetwork, ...]
    allowed_ports: frozenset[int] | None
    sink_url: str
    replay_deadline_s: float
    list_max: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookApiSettings:
        """Read the settings; raises SettingsError naming the first bad variable."""
        env = Env(environ)
        allowed = env.ports("CLICKWIRE_WEBHOOK_PORTS")
        return cls(
            # Off by default: only development and tests reach private addresses, e.g. 127.0.0.1/32.
            allow_nets=env.networks("CLICKWIRE_WEBHOOK_ALLOW_NETS"),
            allowed_ports=allowed,
            sink_url=env.url("CLICKWIRE_SINK_URL") or DEFAULT_SINK_URL,
            replay_deadline_s=env.float("CLICKWIRE_API_REPLAY_DEADLINE", 10.0, lo=0.1),
        )


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _now_ms() -> int:
    return int(time.time() * 1000)


class WebhookStore:
    """The subscriptions table this API follows, and writes to it that wait until they are applied."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.topic = name(Topic.WEBHOOK_SUBSCRIPTIONS, ctx.common.topic_prefix)
        self.codec = codec_for(Topic.WEBHOOK_SUBSCRIPTIONS, ctx.common.schema_registry_url)
        self.table: TopicTable[Record] = TopicTable(ctx.common, Topic.WEBHOOK_SUBSCRIPTIONS, self.codec.decode,
                                                    on_change=self._changed)
        self._ready: asyncio.Future[None] | None = None
        self._waiters: dict[str, list[tuple[Callable[[Record | None], bool], asyncio.Future[None]]]] = {}

    def _changed(self, key: str, _old: Record | None, new: Record | None) -> None:
        waiting = self._waiters.pop(key, [])
        for predicate, fut in waiting:
            if fut.done():
                continue
            if predicate(new):
                fut.set_result(None)
            else:
                self._waiters.setdefault(key, []).append((predicate, fut))

    async def ready(self) -> None:
        """Start following the topic on first use (for the life of the API) and wait until loaded."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            self.ctx.background(self._follow(self._ready), "follow-webhook-subscriptions")
        await asyncio.shield(self._ready)

    async def _follow(self, ready: asyncio.Future[None]) -> None:
        try:
            await self.table.start()
            await self.table.wait_loaded()
            ready.set_result(None)
            await asyncio.Event().wait()  # until the API stops and cancels us
        except Exception as exc:
            if not ready.done():
                ready.set_exception(Problem(503, "unavailable", f"subscriptions not readable: {exc}"))
                self._ready = None  # the next request tries again
            raise
        finally:
            await self.table.stop()

    async def get(self, workspace_id: str, subscription_id: str) -> Record:
        """The subscription, or a 404 Problem when absent or in another workspace."""
        await self.ready()
        record = self.table.get(subscription_id)
        if record is None or record["workspace_id"] != workspace_id:
            # Another workspace's id answers exactly like a missing one: ids are not secrets to probe.
            raise Problem(404, "not_found", f"no webhook {subscription_id}")
        return record

    async def _wait(self, key: str, predicate: Callable[[Record | None], bool], timeout_s: float = 5.0) -> None:
        if predicate(self.table.get(key)):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append((predicate, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            log.warning("subscription write not seen by follower in time", subscription_id=key)

    async def put(self, record: Record) -> None:
        """Write a subscription version, then wait until this API's table shows it."""
        await self.ready()
        await self.ctx.producer.send_and_wait(self.topic, self.codec.encode(record), key=record["id"].encode())
        version = record["updated_ms"]
        await self._wait(record["id"], lambda r: r is not None and r["updated_ms"] >= version)

    async def delete(self, subscription_id: str) -> None:
        """Tombstone a subscription, then wait until this API's table has dropped it."""
        await self.ctx.producer.send_and_wait(self.topic, None, key=subscription_id.encode())
        await self._wait(subscription_id, lambda r: r is None)


class WebhookRoutes:
    """Handlers of /v1/webhooks; one instance per API process."""

    def __init__(self, ctx: ApiContext, settings: WebhookApiSettings, *, sql: SqlSource | None = None,
                 resolver: Resolver | None = None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.store = WebhookStore(ctx)
        self._sql = sql
        self._resolver = resolver
        self.outbox = name(Topic.WEBHOOK_OUTBOX, ctx.common.topic_prefix)
        self.outbox_codec = codec_for(Topic.WEBHOOK_OUTBOX, ctx.common.schema_registry_url)

    async def _body(self, request: Request, model: type[Any]) -> Any:
        return validate(model, await read_json(request, self.ctx.settings.max_body_bytes))

    async def vet(self, url: str) -> None:
        """Refuse a URL the dispatcher must never call: 422 with the SSRF guard's reason code."""
        try:
            target = vet_url(url, allow_nets=self.settings.allow_nets, allowed_ports=self.settings.allowed_ports)
            if target.ip is None:
                await resolve_and_vet(target.host, target.port, allow_nets=self.settings.allow_nets,
                                      resolver=self._resolver)
        except SSRFError as exc:
            raise Problem(422, exc.reason, f"url refused: {exc}",
                          errors=[{"loc": ["url"], "msg": str(exc), "type": exc.reason}]) from None

    async def create(self, request: Request) -> Response:
        """POST /v1/webhooks: store a subscription; the response carries its secret, this once."""
        workspace = await self.ctx.authenticate(request)
        body: WebhookCreate = await self._body(request, WebhookCreate)
        await self.vet(body.url)
        secret = new_secret()
        now = _now_ms()
        record = build_subscription(body, workspace_id=workspace, secret=secret, now_ms=now)
        await self.store.put(record)
        view = {**public_view(record, now_ms=now), "secret": secret}
        return _json(view, 201, headers={"Location": f"/v1/webhooks/{record['id']}"})

    async def index(self, request: Request) -> Response:
        """GET /v1/webhooks: the workspace's subscriptions, oldest first, ``limit``/``cursor`` paged."""
        workspace = await self.ctx.authenticate(request)
        limit_text = request.query_params.get("limit", "")
        if limit_text and (not limit_text.isdigit() or not 1 <= int(limit_text) <= self.settings.list_max):
            raise Problem(400, "invalid_query", f"limit must be an integer from 1 to {self.settings.list_max}")
        limit = int(limit_text) if limit_text else self.settings.list_max
        cursor = request.query_params.get("cursor", "")
        await self.store.ready()
        # Ids are uuid7-based, so their order is creation order and the last id is the cursor.
        mine = sorted((k for k, r in self.store.table.items() if r["workspace_id"] == workspace and k > cursor))
        page = mine[:limit]
        now = _now_ms()
        data = [public_view(r, now_ms=now) for r in (self.store.table.get(k) for k in page) if r is not None]
        return _json({"data": data, "next_cursor": page[-1] if len(mine) > limit else None})

    async def read(self, request: Request) -> Response:
        """GET /v1/webhooks/{id}: one subscription, without its secrets."""
        workspace = await self.ctx.authenticate(request)
        record = await self.store.get(workspace, request.path_params["id"])
        return _json(public_view(record, now_ms=_now_ms()))

    async def update(self, request: Request) -> Response:
        """PATCH /v1/webhooks/{id}: change the fields given; a new URL is vetted like at creation."""
        workspace = await self.ctx.authenticate(request)
        body: WebhookPatch = await self._body(request, WebhookPatch)
        current = await self.store.get(workspace, request.path_params["id"])
        if body.url is not None and body.url != current["url"]:
            await self.vet(body.url)
        now = _now_ms()
        record = patch_subscription(current, body, now_ms=now)
        await self.store.put(record)
        return _json(public_view(record, now_ms=now))

    async def delete(self, request: Request) -> Response:
        """DELETE /v1/webhooks/{id}: tombstone the subscription; deliveries stop."""
        workspace = await self.ctx.authenticate(request)
        record = await self.store.get(workspace, request.path_params["id"])
        await self.store.delete(record["id"])
        return Response(status_code=204)

    async def rotate(self, request: Request) -> Response:
        """POST /v1/webhooks/{id}/rotate-secret: sign with a new secret, keep the old one for a grace period."""
        workspace = await self.ctx.authenticate(request)
        grace = request.query_params.get("grace_seconds")
        has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        if has_body:
            body: RotateSecret = await self._body(request, RotateSecret)
        elif grace is not None:
            body = validate(RotateSecret, {"grace_seconds": int(grace) if grace.isdigit() else grace})
        else:
            body = validate(RotateSecret, {})
        current = await self.store.get(workspace, request.path_params["id"])
        secret = new_secret()
        now = _now_ms()
        record = rotate_secret(current, secret, now_ms=now, grace_s=body.grace_seconds)
        await self.store.put(record)
        return _json({"id": record["id"], "secret": secret,
                      "previous_secrets_expire_at": previous_expiries(record, now_ms=now)})

    async def test(self, request: Request) -> Response:
        """POST /v1/webhooks/{id}/test: queue a ping event for the endpoint; returns its event id."""
        workspace = await self.ctx.authenticate(request)
        record = await self.store.get(workspace, request.path_params["id"])
        if not record["enabled"]:
            raise Problem(409, "webhook_disabled", "enable the webhook before testing it")
        event = ping_event(record, at_ms=_now_ms())
        delivery = {"event_id": event.id, "subscription_id": record["id"], "event_type": event.type,
                    "created_ms": event.created_ms, "body": event.body, "attempt": 0, "not_before_ms": 0}
        await self.ctx.producer.send_and_wait(self.outbox, self.outbox_codec.encode(delivery),
                                              key=record["id"].encode())
        return _json({"event_id": event.id, "type": event.type}, 202)

    async def attempts(self, request: Request) -> Response:
        """GET /v1/webhooks/{id}/attempts: the delivery attempt log, newest first, keyset-paged."""
        workspace = await self.ctx.authenticate(request)
        limit = parse_limit(request.query_params.get("limit"))
        record = await self.store.get(workspace, request.path_params["id"])
        cursor = request.query_params.get("cursor")
        try:
            if self._sql is not None:
                page = await attempts_page(self._sql, record["id"], cursor=cursor, limit=limit)
            else:
                async with SqlClient(self.settings.sink_url) as sql:
                    page = await attempts_page(sql, record["id"], cursor=cursor, limit=limit)
        except Problem:
            raise
        except Exception as exc:  # the sink is another process: any failure of it is a 503 here
            log.warning("attempt log unavailable", error=f"{type(exc).__name__}: {exc}")
            raise Problem(503, "unavailable", "the attempt log is unavailable; try again shortly") from None
        return _json(page)

    async def replay(self, request: Request) -> Response:
        """POST /v1/webhooks/{id}/replay: re-queue past deliveries by event ids and/or outbox time range."""
        workspace = await self.ctx.authenticate(request)
        body: ReplayBody = await self._body(request, ReplayBody)
        record = await self.store.get(workspace, request.path_params["id"])
        result = await replay(self.ctx.common, self.ctx.producer, record["id"], replay_request(body),
                              deadline_s=self.settings.replay_deadline_s)
        return _json(result.public(), 202)


def routes(ctx: ApiContext, *, settings: WebhookApiSettings | None = None, sql: SqlSource | None = None,
           resolver: Resolver | None = None) -> list[Route]:
    """The /v1/webhooks routes; ``sql`` and ``resolver`` replace the sink client and DNS in tests."""
    h = WebhookRoutes(ctx, settings or WebhookApiSettings.from_env(), sql=sql, resolver=resolver)
    _STORES[id(ctx)] = h.store
    return [
        Route("/v1/webhooks", h.create, methods=["POST"]),
        Route("/v1/webhooks", h.index, methods=["GET"]),
        Route("/v1/webhooks/{id}", h.read, methods=["GET"]),
        Route("/v1/webhooks/{id}", h.update, methods=["PATCH"]),
        Route("/v1/webhooks/{id}", h.delete, methods=["DELETE"]),
        Route("/v1/webhooks/{id}/rotate-secret", h.rotate, methods=["POST"]),
        Route("/v1/webhooks/{id}/test", h.test, methods=["POST"]),
        Route("/v1/webhooks/{id}/attempts", h.attempts, methods=["GET"]),
        Route("/v1/webhooks/{id}/replay", h.replay, methods=["POST"]),
    ]


async def on_startup(ctx: ApiContext) -> None:
    """Load the subscriptions table when the API starts, so the first request does not wait for it."""
    store = _STORES.get(id(ctx))
    if store is not None and store.ctx is ctx:
        await store.ready()


# ---- OpenAPI -------------------------------------------------------------------------------------

def _body_ref(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMMON_ERRORS = {"401": problem_ref("Missing or invalid API key"), "404": problem_ref("No such webhook")}
_SSRF = problem_ref("Invalid body, or the URL is refused (reason: loopback, private, metadata, link_local, "
                    "cgnat, reserved, internal_name, dns_failure, port, scheme, credentials, ...)")
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/webhooks": {
        "post": {"summary": "Create a webhook subscription", "tags": ["webhooks"], "security": _SECURITY,
                 "requestBody": _body_ref("WebhookCreate"),
                 "responses": {"201": _ok("Created; `secret` is shown this once", "WebhookCreated"),
                               "401": _COMMON_ERRORS["401"], "422": _SSRF}},
        "get": {"summary": "List the workspace's webhooks, oldest first", "tags": ["webhooks"],
                "security": _SECURITY,
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                          "maximum": 100}},
                               {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _ok("One page", "WebhookPage"), "401": _COMMON_ERRORS["401"],
                              "400": problem_ref("Bad limit (reason invalid_query)")}},
    },
    "/v1/webhooks/{id}": {
        "parameters": [_ID],
        "get": {"summary": "Read a webhook (never its secret)", "tags": ["webhooks"], "security": _SECURITY,
                "responses": {"200": _ok("The webhook", "Webhook"), **_COMMON_ERRORS}},
        "patch": {"summary": "Change the fields given (filters merge key by key)", "tags": ["webhooks"],
                  "security": _SECURITY, "requestBody": _body_ref("WebhookPatch"),
                  "responses": {"200": _ok("The webhook", "Webhook"), **_COMMON_ERRORS, "422": _SSRF}},
        "delete": {"summary": "Delete a webhook; deliveries stop", "tags": ["webhooks"], "security": _SECURITY,
                   "responses": {"204": {"description": "Deleted"}, **_COMMON_ERRORS}},
    },
    "/v1/webhooks/{id}/rotate-secret": {
        "parameters": [_ID],
        "post": {"summary": "Sign with a new secret; the old one keeps signing for grace_seconds (default 24 h)",
                 "tags": ["webhooks"], "security": _SECURITY,
                 "parameters": [{"name": "grace_seconds", "in": "query", "schema": {"type": "integer"}}],
                 "requestBody": {**_body_ref("RotateSecret"), "required": False},
                 "responses": {"200": _ok("The new secret, shown this once", "SecretRotated"), **_COMMON_ERRORS,
                               "422": problem_ref("Invalid grace_seconds")}},
    },
    "/v1/webhooks/{id}/test": {
        "parameters": [_ID],
        "post": {"summary": "Send a ping event to the endpoint", "tags": ["webhooks"], "security": _SECURITY,
                 "responses": {"202": _ok("Queued for delivery", "PingQueued"), **_COMMON_ERRORS,
                               "409": problem_ref("The webhook is disabled")}},
    },
    "/v1/webhooks/{id}/attempts": {
        "parameters": [_ID],
        "get": {"summary": "Delivery attempts, newest first", "tags": ["webhooks"], "security": _SECURITY,
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                          "maximum": 500}},
                               {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _ok("One page", "AttemptPage"), **_COMMON_ERRORS,
                              "400": problem_ref("Bad limit or cursor"),
                              "503": problem_ref("The attempt log is unavailable")}},
    },
    "/v1/webhooks/{id}/replay": {
        "parameters": [_ID],
        "post": {"summary": "Re-send past events by id and/or outbox time range, in their original order",
                 "tags": ["webhooks"], "security": _SECURITY, "requestBody": _body_ref("ReplayBody"),
                 "responses": {"202": _ok("Queued", "ReplayQueued"), **_COMMON_ERRORS,
                               "422": problem_ref("Invalid body")}},
    },
}

_MODELS: tuple[type[BaseModel], ...] = (WebhookCreate, WebhookPatch, WebhookCreated, Webhook, WebhookPage,
                                        RotateSecret, SecretRotated, PingQueued, AttemptPage, ReplayBody,
                                        ReplayQueued)
OPENAPI_SCHEMAS: dict[str, Any] = {**openapi_schemas(*_MODELS), "Problem": PROBLEM_SCHEMA}
