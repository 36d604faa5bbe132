"""API keys per workspace, kept hashed on the compacted ``api.keys`` topic.

A token is ``cw_<id>.<secret>``: the id is public (the topic key, shown by ``clickwire keys
list``), the secret is shown once at creation and only its SHA-256 is stored. Secrets are 238
random bits, so a plain SHA-256 (no slow KDF) is enough: there is nothing to brute-force.
Revoking republishes the key with ``revoked = true`` (kept, not tombstoned, so ``list`` still
shows it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clickwire.codec import codec_for
from clickwire.codes import new_code
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.api.body import STRICT, openapi_schemas, read_json, validate
from services.api.problems import Problem, problem_ref

if TYPE_CHECKING:
    from services.api.context import ApiContext

TOKEN_PREFIX = "cw_"  # noqa: S105 (a public marker that makes leaked tokens greppable, not a secret)
WORKSPACE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_TOKEN_RE = re.compile(r"cw_([A-Za-z0-9]{16})\.([A-Za-z0-9]{40})", re.ASCII)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as stored on the topic (schemas/avro/api_key.avsc)."""

    id: str
    workspace_id: str
    name: str
    hash: str
    created_ms: int
    revoked: bool = False

    def to_avro(self) -> dict[str, Any]:
        """The record as api_key.avsc encodes it."""
        return {"id": self.id, "workspace_id": self.workspace_id, "name": self.name, "hash": self.hash,
                "created_ms": self.created_ms, "revoked": self.revoked}

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> ApiKey:
        """Build a key from a decoded record."""
        created = record["created_ms"]
        if isinstance(created, datetime):
            created = int(created.timestamp() * 1000)
        return cls(id=record["id"], workspace_id=record["workspace_id"], name=record.get("name", ""),
                   hash=record["hash"], created_ms=int(created), revoked=bool(record.get("revoked", False)))


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a token's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(workspace_id: str, key_name: str = "") -> tuple[ApiKey, str]:
    """Mint a key for a workspace; return it and the token (shown once, never stored)."""
    if not WORKSPACE_RE.fullmatch(workspace_id):
        raise ValueError(f"workspace id {workspace_id!r}: expected 1-64 of [A-Za-z0-9_-]")
    key_id, secret = new_code(16), new_code(40)
    key = ApiKey(id=key_id, workspace_id=workspace_id, name=key_name, hash=hash_secret(secret),
                 created_ms=int(time.time() * 1000))
    return key, f"{TOKEN_PREFIX}{key_id}.{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a token into (key id, secret), or None when it is not shaped like one."""
    m = _TOKEN_RE.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


class KeyLookup(Protocol):
    """Anything with ``get(key_id)``: a dict or a TopicTable of keys."""

    def get(self, key: str, /) -> ApiKey | None: ...


def verify(token: str, lookup: KeyLookup) -> ApiKey | None:
    """Return the live key a token belongs to, or None; compares hashes in constant time."""
    parts = parse_token(token)
    if parts is None:
        return None
    key = lookup.get(parts[0])
    # Hash even for an unknown id so a miss costs the same as a wrong secret.
    candidate = hash_secret(parts[1])
    if key is None:
        hmac.compare_digest(candidate, "0" * 64)
        return None
    if not hmac.compare_digest(candidate, key.hash) or key.revoked:
        return None
    return key


def revoked(key: ApiKey) -> ApiKey:
    """The same key marked revoked."""
    return replace(key, revoked=True)


async def publish_key(common: CommonSettings, producer: AIOKafkaProducer, key: ApiKey) -> None:
    """Write a key to api.keys and wait until the broker has it."""
    codec = codec_for(Topic.API_KEYS, common.schema_registry_url)
    await producer.send_and_wait(name(Topic.API_KEYS, common.topic_prefix), codec.encode(key.to_avro()),
                                 key=key.id.encode())


def decode_key(common: CommonSettings) -> Callable[[bytes], ApiKey]:
    """A decoder from api.keys payloads to ApiKey (for a TopicTable)."""
    codec = codec_for(Topic.API_KEYS, common.schema_registry_url)

    def decode(raw: bytes) -> ApiKey:
        return ApiKey.from_avro(codec.decode(raw))

    return decode


# ---- /v1/keys: a workspace manages its own keys with an existing one ------------------------------

def key_json(key: ApiKey) -> dict[str, Any]:
    """The API representation of a key (never the hash)."""
    created = datetime.fromtimestamp(key.created_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return {"id": key.id, "workspace_id": key.workspace_id, "name": key.name,
            "created_at": created.replace("+00:00", "Z"), "revoked": key.revoked}


class KeyCreate(BaseModel):
    """A new key for the caller's workspace."""

    model_config = STRICT
    name: Annotated[str, StringConstraints(max_length=200)] = ""


async def _list_keys(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    keys = sorted((k for _, k in ctx.keys.items() if k.workspace_id == workspace), key=lambda k: k.created_ms)
    return Response(orjson.dumps({"data": [key_json(k) for k in keys]}), media_type="application/json")


async def _create_key(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    body = validate(KeyCreate, await read_json(request, ctx.settings.max_body_bytes))
    key, token = new_key(workspace, body.name)
    await publish_key(ctx.common, ctx.producer, key)
    return Response(orjson.dumps({**key_json(key), "token": token}), status_code=201,
                    media_type="application/json")


async def _revoke_key(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    workspace = await ctx.authenticate(request)
    key = ctx.keys.get(request.path_params["key_id"])
    if key is None or key.workspace_id != workspace:
        raise Problem(404, "not_found", "no such key in this workspace")
    if not key.revoked:
        await publish_key(ctx.common, ctx.producer, revoked(key))
    return Response(status_code=204)


def routes(ctx: ApiContext) -> list[BaseRoute]:
    """The /v1/keys routes."""
    return [
        Route("/v1/keys", _list_keys, methods=["GET"]),
        Route("/v1/keys", _create_key, methods=["POST"]),
        Route("/v1/keys/{key_id}", _revoke_key, methods=["DELETE"]),
    ]


_KEY_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "workspace_id": {"type": "string"}, "name": {"type": "string"},
                   "created_at": {"type": "string", "format": "date-time"}, "revoked": {"type": "boolean"},
                   "token": {"type": "string", "description": "Only in the creation response."}},
}
OPENAPI_SCHEMAS: dict[str, Any] = {**openapi_schemas(KeyCreate), "ApiKey": _KEY_SCHEMA}
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/keys": {
        "get": {"operationId": "listKeys", "tags": ["keys"], "security": [{"bearer": []}],
                "summary": "List the workspace's API keys (never the secrets)",
                "responses": {"200": {"description": "Keys.", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"data": {"type": "array",
                                                              "items": {"$ref": "#/components/schemas/ApiKey"}}}}}}},
                    "401": problem_ref("Missing or invalid API key.")}},
        "post": {"operationId": "createKey", "tags": ["keys"], "security": [{"bearer": []}],
                 "summary": "Create another key for the workspace; the token is shown once",
                 "requestBody": {"content": {"application/json": {"schema": {
                     "$ref": "#/components/schemas/KeyCreate"}}}},
                 "responses": {"201": {"description": "The key with its token.", "content": {
                     "application/json": {"schema": {"$ref": "#/components/schemas/ApiKey"}}}},
                     "401": problem_ref("Missing or invalid API key."), "422": problem_ref("Invalid body.")}},
    },
    "/v1/keys/{key_id}": {
        "delete": {"operationId": "revokeKey", "tags": ["keys"], "security": [{"bearer": []}],
                   "summary": "Revoke a key of the workspace",
                   "parameters": [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                   "responses": {"204": {"description": "Revoked."}, "404": problem_ref("No such key."),
                                 "401": problem_ref("Missing or invalid API key.")}},
    },
}
