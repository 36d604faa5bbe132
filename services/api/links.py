"""``/v1/links``: create (one or up to 1,000), read, update, delete and list short links.

Links live on the compacted links topic (key = domain/code); this module validates, checks
destinations, claims aliases (services.api.claims) and publishes. Every write is on the topic
before the response is sent, and the process's own table shows it too (read-your-writes).

Bulk create is per item: each item is validated, claimed and published on its own and either
fully published or not at all; the response is always 207 with one result per item, in order.
``domain`` and ``code`` cannot be changed by PATCH (delete and re-create instead).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import structlog
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clickwire.codes import new_code, valid_code
from clickwire.destinations import check_destination
from clickwire.links import Link, RoutingRule, RuleCondition
from services.api.body import STRICT, openapi_schemas, read_json, validate
from services.api.claims import ClaimTimeout
from services.api.context import ApiContext
from services.api.problems import Problem, problem_ref

log = structlog.get_logger(__name__)
LINK_WRITES = Counter("clickwire_api_link_writes_total", "Links written to the links topic", ["op"])
MAX_BULK = 1000
_RANDOM_CODE_ATTEMPTS = 3
_BULK_CONCURRENCY = 64

Short = Annotated[str, StringConstraints(min_length=1, max_length=256)]
UrlStr = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ConditionIn(BaseModel):
    """One test of a routing rule (all conditions of a rule must hold)."""

    model_config = STRICT
    field: Literal["device_type", "os", "country", "language", "referrer_host", "query", "time"]
    op: Literal["eq", "in", "prefix", "between"]
    values: list[Short] = Field(min_length=1, max_length=100)


class RuleIn(BaseModel):
    """Send matching clicks to another destination; the first matching rule wins."""

    model_config = STRICT
    conditions: list[ConditionIn] = Field(min_length=1, max_length=20)
    destination: UrlStr


class LinkCreate(BaseModel):
    """A new short link; only `destination` is required."""

    model_config = STRICT
    domain: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None
    code: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="Custom alias ([A-Za-z0-9_-]{1,64}); random 12-char base62 when omitted.")
    destination: UrlStr
    redirect_type: Literal[301, 302, 307, 308] = 302
    expires_at: AwareDatetime | None = None
    expired_url: UrlStr | None = None
    max_clicks: Annotated[int, Field(ge=0, le=2**62)] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    campaign: Short | None = None
    utm_source: Short | None = None
    utm_medium: Short | None = None
    utm_campaign: Short | None = None
    utm_term: Short | None = None
    utm_content: Short | None = None
    rules: list[RuleIn] = Field(default_factory=list, max_length=50)
    bot_policy: Literal["redirect", "preview", "refuse"] = "redirect"
    preview_title: Annotated[str, StringConstraints(max_length=300)] | None = None
    preview_description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    preview_image: UrlStr | None = None


class LinkPatch(BaseModel):
    """Fields to change; `null` clears an optional field; `domain`/`code` must stay as they are."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    domain: str | None = None
    code: str | None = None
    # Absent means unchanged. These five cannot be cleared: null is refused by the handler.
    destination: UrlStr | None = None
    redirect_type: Literal[301, 302, 307, 308] | None = None
    expires_at: AwareDatetime | None = None
    expired_url: UrlStr | None = None
    max_clicks: Annotated[int, Field(ge=0, le=2**62)] | None = None
    tags: list[Tag] | None = Field(None, max_length=50)
    campaign: Short | None = None
    utm_source: Short | None = None
    utm_medium: Short | None = None
    utm_campaign: Short | None = None
    utm_term: Short | None = None
    utm_content: Short | None = None
    rules: list[RuleIn] | None = Field(None, max_length=50)
    bot_policy: Literal["redirect", "preview", "refuse"] | None = None
    preview_title: Annotated[str, StringConstraints(max_length=300)] | None = None
    preview_description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    preview_image: UrlStr | None = None


class LinkOut(BaseModel):
    """A short link as the API returns it."""

    id: str
    workspace_id: str
    domain: str
    code: str
    short_url: str
    destination: str
    redirect_type: int
    expires_at: datetime | None
    expired_url: str | None
    max_clicks: int | None
    tags: list[str]
    campaign: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None
    rules: list[RuleIn]
    bot_policy: str
    preview_title: str | None
    preview_description: str | None
    preview_image: str | None
    destination_trust: int = Field(description="0-100; lowered by destination_flags.")
    destination_flags: list[str]
    blocked: bool = Field(description="Destination is blocklisted: the redirector serves 451.")
    created_at: datetime
    updated_at: datetime


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def link_json(link: Link) -> dict[str, Any]:
    """The API representation of a link (LinkOut)."""
    doc = link.to_avro()
    for ms_field in ("created_ms", "updated_ms", "expires_ms"):
        doc.pop(ms_field)
    doc.update(short_url=f"https://{link.domain}/{link.code}", expires_at=_iso(link.expires_ms),
               created_at=_iso(link.created_ms), updated_at=_iso(link.updated_ms))
    return doc


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


# ---- destination checks -------------------------------------------------------------------------

def _checked(ctx: ApiContext, url: str, field: str) -> tuple[str, int, list[str]]:
    verdict = check_destination(url, ctx.blocklist, ctx.shorteners)
    if not verdict.ok:
        raise Problem(422, verdict.reason or "invalid_url", f"{field} is not an acceptable destination",
                      field=field)
    return verdict.normalized_url, verdict.trust, list(verdict.flags)


def _rules(ctx: ApiContext, rules: list[RuleIn]) -> tuple[RoutingRule, ...]:
    out = []
    for i, rule in enumerate(rules):
        url, _, _ = _checked(ctx, rule.destination, f"rules[{i}].destination")
        out.append(RoutingRule(
            conditions=tuple(RuleCondition(c.field, c.op, tuple(c.values)) for c in rule.conditions),
            destination=url))
    return tuple(out)


def blocklisted(ctx: ApiContext, link: Link) -> bool:
    """True when the link's destination, expired URL or a rule destination is on the blocklist."""
    urls = [link.destination, *(r.destination for r in link.rules)]
    if link.expired_url:
        urls.append(link.expired_url)
    return any(check_destination(u, ctx.blocklist, ctx.shorteners).reason == "blocklisted" for u in urls)


# ---- create -------------------------------------------------------------------------------------

def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _new_link(ctx: ApiContext, workspace: str, body: LinkCreate) -> Link:
    domain = (body.domain or ctx.settings.default_domain).lower()
    if not ctx.settings.domain_allowed(domain):
        raise Problem(422, "domain_not_allowed", f"links cannot be created on {domain!r}", field="domain")
    if body.code is not None and not valid_code(body.code):
        raise Problem(422, "invalid_code", "code must be 1-64 of [A-Za-z0-9_-] and not a reserved path",
                      field="code")
    destination, trust, flags = _checked(ctx, body.destination, "destination")
    expired_url = _checked(ctx, body.expired_url, "expired_url")[0] if body.expired_url else None
    preview_image = _checked(ctx, body.preview_image, "preview_image")[0] if body.preview_image else None
    now = int(time.time() * 1000)
    return Link(
        id="lnk_" + new_code(20), workspace_id=workspace, domain=domain, code=body.code or new_code(),
        destination=destination, created_ms=now, updated_ms=now, redirect_type=body.redirect_type,
        expires_ms=_ms(body.expires_at), expired_url=expired_url, max_clicks=body.max_clicks,
        tags=tuple(body.tags), campaign=body.campaign, utm_source=body.utm_source,
        utm_medium=body.utm_medium, utm_campaign=body.utm_campaign, utm_term=body.utm_term,
        utm_content=body.utm_content, rules=_rules(ctx, body.rules), bot_policy=body.bot_policy,
        preview_title=body.preview_title, preview_description=body.preview_description,
        preview_image=preview_image, destination_trust=trust, destination_flags=tuple(flags),
    )


def _is_link(link_id: str) -> Callable[[Link | None], bool]:
    return lambda seen: seen is not None and seen.id == link_id


async def create_one(ctx: ApiContext, workspace: str, data: Any) -> Link:
    """Validate, claim and publish one link; raises a Problem (nothing published) when refused."""
    body = validate(LinkCreate, data)
    link = _new_link(ctx, workspace, body)
    attempts = 1 if body.code is not None else _RANDOM_CODE_ATTEMPTS
    for attempt in range(attempts):
        if attempt:
            link = replace(link, code=new_code())
        if link.key in ctx.links:
            continue
        try:
            won = await ctx.claims.claim(link.domain, link.code, link.id, workspace)
        except ClaimTimeout:
            raise Problem(503, "claim_timeout", "could not confirm the alias in time; retry") from None
        if won:
            await ctx.publish_link(link)
            LINK_WRITES.labels("create").inc()
            await ctx.wait_applied(link.key, _is_link(link.id))
            return link
    raise Problem(409, "alias_taken", f"{link.domain}/{link.code} is already taken", field="code")


async def _create(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    data = await read_json(request, ctx.settings.max_body_bytes)
    if isinstance(data, dict) and set(data) == {"links"}:
        items = data["links"]
        if not isinstance(items, list) or not items:
            raise Problem(422, "invalid_body", "links must be a non-empty array of link objects",
                          errors=[{"loc": ["links"], "msg": "expected a non-empty array", "type": "list_type"}])
        if len(items) > MAX_BULK:
            raise Problem(422, "too_many_items", f"at most {MAX_BULK} links per request, got {len(items)}")
        gate = asyncio.Semaphore(_BULK_CONCURRENCY)

        async def one(index: int, item: Any) -> dict[str, Any]:
            async with gate:
                try:
                    link = await create_one(ctx, workspace, item)
                except Problem as p:
                    return {"index": index, "status": p.status, "problem": p.body()}
                return {"index": index, "status": 201, "link": link_json(link)}

        results = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        created = sum(1 for r in results if r["status"] == 201)
        return _json({"created": created, "failed": len(results) - created, "results": results}, 207)
    link = await create_one(ctx, workspace, data)
    return _json(link_json(link), 201)


# ---- read, update, delete -----------------------------------------------------------------------

def _owned(ctx: ApiContext, workspace: str, link_id: str) -> Link:
    link = ctx.link_by_id(link_id)
    # Another workspace's link is reported as absent: ids must not leak across workspaces.
    if link is None or link.workspace_id != workspace:
        raise Problem(404, "not_found", f"no link {link_id!r}")
    return link


async def _get(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    return _json(link_json(_owned(ctx, workspace, request.path_params["link_id"])))


def patched(ctx: ApiContext, link: Link, patch: LinkPatch) -> Link:
    """The link with the patch applied and its destinations re-checked."""
    given = patch.model_fields_set
    for field in ("domain", "code"):
        if field in given and getattr(patch, field) != getattr(link, field):
            raise Problem(422, "immutable_field", f"{field} cannot be changed; delete and re-create",
                          field=field)
    changes: dict[str, Any] = {}
    simple = ("redirect_type", "max_clicks", "campaign", "utm_source", "utm_medium", "utm_campaign",
              "utm_term", "utm_content", "bot_policy", "preview_title", "preview_description")
    for field in simple:
        if field in given:
            changes[field] = getattr(patch, field)
    if patch.destination is not None:
        url, trust, flags = _checked(ctx, patch.destination, "destination")
        changes.update(destination=url, destination_trust=trust, destination_flags=tuple(flags), blocked=False)
    if "expires_at" in given:
        changes["expires_ms"] = _ms(patch.expires_at)
    if "expired_url" in given:
        changes["expired_url"] = _checked(ctx, patch.expired_url, "expired_url")[0] if patch.expired_url else None
    if "preview_image" in given:
        changes["preview_image"] = (
            _checked(ctx, patch.preview_image, "preview_image")[0] if patch.preview_image else None)
    if patch.tags is not None:
        changes["tags"] = tuple(patch.tags)
    if patch.rules is not None:
        changes["rules"] = _rules(ctx, patch.rules)
    updated = replace(link, **changes, updated_ms=max(int(time.time() * 1000), link.updated_ms + 1))
    if updated.blocked != blocklisted(ctx, updated):
        updated = replace(updated, blocked=not updated.blocked)
    return updated


async def _patch(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    link = _owned(ctx, workspace, request.path_params["link_id"])
    patch = validate(LinkPatch, await read_json(request, ctx.settings.max_body_bytes))
    for field in ("destination", "redirect_type", "tags", "rules", "bot_policy"):
        if field in patch.model_fields_set and getattr(patch, field) is None:
            raise Problem(422, "invalid_body", f"{field} cannot be null",
                          errors=[{"loc": [field], "msg": "may not be null", "type": "none_forbidden"}])
    updated = patched(ctx, link, patch)
    await ctx.publish_link(updated)
    LINK_WRITES.labels("update").inc()
    await ctx.wait_applied(updated.key, lambda seen: seen is not None and seen.updated_ms >= updated.updated_ms)
    return _json(link_json(updated))


async def _delete(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    link = _owned(ctx, workspace, request.path_params["link_id"])
    await ctx.publish_tombstone(link.key)
    LINK_WRITES.labels("delete").inc()
    await ctx.wait_applied(link.key, lambda seen: seen is None or seen.id != link.id)
    return Response(status_code=204)


# ---- list ---------------------------------------------------------------------------------------

_LIST_PARAMS = frozenset({"tag", "domain", "cursor", "limit"})


def encode_cursor(created_ms: int, link_id: str) -> str:
    """An opaque cursor pointing just after (created_ms, link_id)."""
    return base64.urlsafe_b64encode(orjson.dumps([created_ms, link_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a cursor points after; a 400 Problem when it was not made by encode_cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, link_id = orjson.loads(raw)
        if isinstance(created, int) and not isinstance(created, bool) and isinstance(link_id, str):
            return created, link_id
    except (ValueError, TypeError, orjson.JSONDecodeError):
        pass
    raise Problem(400, "invalid_cursor", "cursor was not returned by this API")


async def _list(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    params = request.query_params
    unknown = set(params) - _LIST_PARAMS
    if unknown:
        raise Problem(400, "invalid_query", f"unknown query parameters: {', '.join(sorted(unknown))}")
    limit_raw = params.get("limit", "100")
    if not limit_raw.isdecimal() or not 1 <= int(limit_raw) <= 1000:
        raise Problem(400, "invalid_query", "limit must be an integer from 1 to 1000")
    limit = int(limit_raw)
    after = decode_cursor(params["cursor"]) if params.get("cursor") else None
    tag, domain = params.get("tag"), params.get("domain")
    # A scan of the followed table: fine for the link counts one API process holds in memory anyway.
    matches = sorted(
        (link for _, link in ctx.links.items()
         if link.workspace_id == workspace
         and (tag is None or tag in link.tags)
         and (domain is None or link.domain == domain.lower())
         and (after is None or (link.created_ms, link.id) > after)),
        key=lambda link: (link.created_ms, link.id),
    )
    page = matches[:limit]
    next_cursor = encode_cursor(page[-1].created_ms, page[-1].id) if len(matches) > limit else None
    return _json({"data": [link_json(link) for link in page], "next_cursor": next_cursor})


# ---- blocklist ----------------------------------------------------------------------------------

async def recheck_links(ctx: ApiContext) -> int:
    """Republish every link whose blocklisted state changed; return how many were republished."""
    changed = 0
    for i, (_, link) in enumerate(ctx.links.items()):
        if i % 500 == 499:
            await asyncio.sleep(0)  # a long table must not stall requests
        now_blocked = blocklisted(ctx, link)
        if now_blocked == link.blocked:
            continue
        if now_blocked:
            updated = replace(link, blocked=True, destination_trust=0,
                              destination_flags=(*link.destination_flags, "blocklisted"))
        else:
            verdict = check_destination(link.destination, ctx.blocklist, ctx.shorteners)
            updated = replace(link, blocked=False, destination_trust=verdict.trust,
                              destination_flags=tuple(verdict.flags))
        await ctx.publish_link(replace(updated, updated_ms=max(int(time.time() * 1000), link.updated_ms + 1)))
        LINK_WRITES.labels("blocklist").inc()
        changed += 1
    return changed


async def watch_blocklist(ctx: ApiContext) -> None:
    """Reload the blocklist when its file changes and re-check every link against it."""
    pending = False
    while True:
        await asyncio.sleep(ctx.settings.blocklist_poll_s)
        pending = ctx.blocklist.reload() or pending
        if not pending:
            continue
        try:
            changed = await recheck_links(ctx)
        except KafkaError as exc:
            log.warning("blocklist re-check failed; retrying", error=str(exc))
            continue
        pending = False
        log.info("blocklist reloaded", hosts=len(ctx.blocklist), links_republished=changed)


async def on_startup(ctx: ApiContext) -> None:
    """Start the blocklist watcher."""
    ctx.background(watch_blocklist(ctx), "watch-blocklist")


def routes(ctx: ApiContext) -> list[BaseRoute]:
    """The /v1/links routes."""
    return [
        Route("/v1/links", _create, methods=["POST"]),
        Route("/v1/links", _list, methods=["GET"]),
        Route("/v1/links/{link_id}", _get, methods=["GET"]),
        Route("/v1/links/{link_id}", _patch, methods=["PATCH"]),
        Route("/v1/links/{link_id}", _delete, methods=["DELETE"]),
    ]


# ---- OpenAPI ------------------------------------------------------------------------------------

_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_LINK = {"$ref": "#/components/schemas/LinkOut"}
_ID = [{"name": "link_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_ERRORS = {
    "401": problem_ref("Missing or invalid API key (reason unauthorized)."),
    "422": problem_ref("Invalid body (invalid_body) or refused destination (blocklisted, private_ip, ...)."),
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **openapi_schemas(LinkCreate, LinkPatch, LinkOut),
    "BulkCreate": {
        "type": "object", "additionalProperties": False, "required": ["links"],
        "properties": {"links": {"type": "array", "minItems": 1, "maxItems": MAX_BULK,
                                 "items": {"$ref": "#/components/schemas/LinkCreate"}}},
    },
    "BulkResult": {
        "type": "object",
        "properties": {
            "created": {"type": "integer"}, "failed": {"type": "integer"},
            "results": {"type": "array", "items": {
                "type": "object", "required": ["index", "status"],
                "properties": {"index": {"type": "integer"}, "status": {"type": "integer"}, "link": _LINK,
                               "problem": {"$ref": "#/components/schemas/Problem"}}}},
        },
    },
    "LinkPage": {
        "type": "object", "required": ["data", "next_cursor"],
        "properties": {"data": {"type": "array", "items": _LINK},
                       "next_cursor": {"type": ["string", "null"],
                                       "description": "Pass as `cursor` for the next page; null on the last."}},
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/links": {
        "post": {
            "operationId": "createLinks", "tags": ["links"], "security": _AUTH,
            "summary": "Create a link, or up to 1,000 with {\"links\": [...]}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/LinkCreate"}, {"$ref": "#/components/schemas/BulkCreate"}]}}}},
            "responses": {
                "201": {"description": "Created.", "content": {"application/json": {"schema": _LINK}}},
                "207": {"description": "Bulk: one result per item, each created or refused on its own.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BulkResult"}}}},
                "409": problem_ref("The alias is taken on this domain (reason alias_taken)."),
                "413": problem_ref("Body too large (reason body_too_large)."),
                **_ERRORS,
            },
        },
        "get": {
            "operationId": "listLinks", "tags": ["links"], "security": _AUTH,
            "summary": "List the workspace's links, oldest first, with cursor pagination",
            "parameters": [
                {"name": "tag", "in": "query", "schema": {"type": "string"}},
                {"name": "domain", "in": "query", "schema": {"type": "string"}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                            "default": 100}},
            ],
            "responses": {
                "200": {"description": "A page of links.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LinkPage"}}}},
                "400": problem_ref("Bad query (invalid_query, invalid_cursor)."),
                "401": _ERRORS["401"],
            },
        },
    },
    "/v1/links/{link_id}": {
        "get": {
            "operationId": "getLink", "tags": ["links"], "security": _AUTH, "summary": "Get a link",
            "parameters": _ID,
            "responses": {"200": {"description": "The link.", "content": {"application/json": {"schema": _LINK}}},
                          "404": problem_ref("No such link in this workspace."), "401": _ERRORS["401"]},
        },
        "patch": {
            "operationId": "updateLink", "tags": ["links"], "security": _AUTH,
            "summary": "Change a link's fields (null clears an optional one)", "parameters": _ID,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/LinkPatch"}}}},
            "responses": {"200": {"description": "The updated link.",
                                  "content": {"application/json": {"schema": _LINK}}},
                          "404": problem_ref("No such link in this workspace."), **_ERRORS},
        },
        "delete": {
            "operationId": "deleteLink", "tags": ["links"], "security": _AUTH,
            "summary": "Delete a link (tombstone on the links topic)", "parameters": _ID,
            "responses": {"204": {"description": "Deleted."}, "404": problem_ref("No such link in this workspace."),
                          "401": _ERRORS["401"]},
        },
    },
}
