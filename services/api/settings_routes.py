"""``GET/PUT /v1/settings/events``: a workspace's thresholds for derived events (milestones, spikes, ...).

Stored on the compacted ``workspace.settings`` topic (key = workspace id) that every patterns
worker follows; the API follows it too, and a PUT answers once its own write is visible, so a
GET right after it reads it. A PUT body holds the overrides — any sections and keys of the
thresholds — and replaces the previous overrides; what it leaves out takes the defaults
(``PUT {}`` restores them all). Validation and defaults: services/patterns/thresholds.py.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clickwire.codec import codec_for
from clickwire.follow import TopicTable
from clickwire.topics import Topic, name
from services.api.body import openapi_schemas, read_json, validation_errors
from services.api.context import ApiContext
from services.api.problems import Problem
from services.dispatcher.payload import rfc3339_ms
from services.patterns.thresholds import EventThresholds, decode_overrides, effective, encode_overrides

_tables: weakref.WeakKeyDictionary[ApiContext, TopicTable[dict[str, Any]]] = weakref.WeakKeyDictionary()
_VISIBLE_TIMEOUT_S = 5.0


def _table(ctx: ApiContext) -> TopicTable[dict[str, Any]]:
    table = _tables.get(ctx)
    if table is None:
        codec = codec_for(Topic.WORKSPACE_SETTINGS, ctx.common.schema_registry_url)
        table = _tables[ctx] = TopicTable(ctx.common, Topic.WORKSPACE_SETTINGS, codec.decode)
    return table


async def on_startup(ctx: ApiContext) -> None:
    """Follow workspace.settings for the lifetime of the process."""
    table = _table(ctx)
    await table.start()
    await table.wait_loaded()

    async def follow() -> None:
        try:
            await asyncio.Event().wait()  # lives until the context cancels it on stop
        finally:
            await table.stop()

    ctx.background(follow(), "follow-workspace-settings")


def _view(workspace_id: str, record: dict[str, Any] | None) -> dict[str, Any]:
    overrides = decode_overrides(record) if record is not None else {}
    return {"workspace_id": workspace_id, "events": effective(overrides).model_dump(mode="json"),
            "overrides": overrides, "updated_at": rfc3339_ms(record["updated_ms"]) if record else None}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _get(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace_id = await ctx.authenticate(request)
    return _json(_view(workspace_id, _table(ctx).get(workspace_id)))


async def _put(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace_id = await ctx.authenticate(request)
    body = await read_json(request, ctx.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise Problem(422, "invalid_body", "the body must be a JSON object of threshold sections")
    try:
        effective(body, strict=True)
    except ValidationError as exc:
        raise Problem(422, "invalid_body", "the thresholds do not match the schema",
                      errors=validation_errors(exc)) from None
    except ValueError as exc:
        raise Problem(422, "invalid_body", str(exc)) from None
    now_ms = int(time.time() * 1000)
    record = encode_overrides(workspace_id, body, now_ms)
    codec = codec_for(Topic.WORKSPACE_SETTINGS, ctx.common.schema_registry_url)
    await ctx.producer.send_and_wait(name(Topic.WORKSPACE_SETTINGS, ctx.common.topic_prefix), codec.encode(record),
                                     key=workspace_id.encode())
    table = _table(ctx)
    deadline = time.monotonic() + _VISIBLE_TIMEOUT_S
    while (table.get(workspace_id) or {}).get("updated_ms", -1) < now_ms and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # read-your-writes: the next GET must see this PUT
    return _json(_view(workspace_id, record))


def routes(ctx: ApiContext) -> list[BaseRoute]:
    """The settings routes."""
    _table(ctx)
    return [Route("/v1/settings/events", _get, methods=["GET"]), Route("/v1/settings/events", _put, methods=["PUT"])]


OPENAPI_SCHEMAS: dict[str, Any] = openapi_schemas(EventThresholds)
_VIEW = {"type": "object", "properties": {
    "workspace_id": {"type": "string"},
    "events": {"$ref": "#/components/schemas/EventThresholds"},
    "overrides": {"type": "object", "description": "What the workspace set; everything else is the default"},
    "updated_at": {"type": ["string", "null"], "format": "date-time"}}}
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/settings/events": {
        "get": {"summary": "The workspace's thresholds for derived events (defaults merged with its overrides)",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "Thresholds",
                                      "content": {"application/json": {"schema": _VIEW}}}}},
        "put": {"summary": "Replace the workspace's overrides (any sections and keys; {} restores the defaults)",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "Thresholds now in force",
                                      "content": {"application/json": {"schema": _VIEW}}},
                              "422": {"description": "Unknown section or key, or a value out of range"}}},
    },
}
