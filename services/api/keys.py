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
from datetime import datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from clickwire.codec import codec_for
from clickwire.codes import new_code
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

TOKEN_PREFIX = "cw_"
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
