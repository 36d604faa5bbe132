"""Webhook event bodies: ``{"id", "type", "created_at", "data"}`` serialized once, exactly as signed and sent.

The fields each object exposes are read from the JSON Schemas in schemas/webhooks/ (version 1), so
the published schema and the bytes on the wire cannot drift apart: a field is public when, and only
when, the schema lists it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import uuid_utils

SCHEMA_VERSION = 1
EVENT_TYPES = ("click", "link.created", "link.updated", "link.deleted", "webhook.disabled", "ping")
# Built by services/patterns (their data arrives ready on events.derived); schemas in schemas/webhooks too.
DERIVED_EVENT_TYPES = ("milestone.reached", "traffic.spike", "traffic.suspicious", "link.destination_failing",
                       "link.blocked")
LINK_EVENT_TYPES = frozenset({"link.created", "link.updated", "link.deleted"})
# Fixed forever: event ids derived from it must come out the same in every process and release.
_EVENT_NAMESPACE = uuid.UUID("7f1c0f0e-5d3a-4b8e-9a57-6c1e2b9d4a10")


def schema_dir() -> Path:
    """Return the directory of the webhook JSON Schemas (CLICKWIRE_WEBHOOK_SCHEMA_DIR overrides)."""
    override = os.environ.get("CLICKWIRE_WEBHOOK_SCHEMA_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "schemas" / "webhooks"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Return one schema document by event type or ``common`` (version ``SCHEMA_VERSION``)."""
    loaded: dict[str, Any] = json.loads((schema_dir() / f"{name}.v{SCHEMA_VERSION}.json").read_text())
    return loaded


@cache
def public_fields(definition: str) -> tuple[str, ...]:
    """Return the fields the schema publishes for ``click``, ``link`` or ``webhook``, in schema order."""
    return tuple(load_schema("common")["$defs"][definition]["properties"])


@dataclass(frozen=True, slots=True)
class Event:
    """One serialized event, ready for webhook_delivery.avsc (event_id, event_type, created_ms, body)."""

    id: str
    type: str
    created_ms: int
    body: bytes


def _project(definition: str, record: Mapping[str, Any]) -> dict[str, Any]:
    # A missing key raises: an upstream record without a published field is a bug to see, not to hide.
    return {name: record[name] for name in public_fields(definition)}


def rfc3339_ms(ms: int) -> str:
    """Return ``ms`` since the epoch as RFC 3339 UTC with milliseconds, e.g. 2026-01-02T03:04:05.006Z."""
    seconds, millis = divmod(ms, 1000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def derived_event_id(*parts: str | int) -> str:
    """Return an event id that is the same every time the same source event is processed."""
    return "evt_" + uuid.uuid5(_EVENT_NAMESPACE, "\x1f".join(map(str, parts))).hex


def fresh_event_id() -> str:
    """Return a new, time-ordered event id for events with no source record (ping, webhook.disabled)."""
    return "evt_" + uuid_utils.uuid7().hex


def _serialize(event_id: str, event_type: str, created_ms: int, data: dict[str, Any]) -> Event:
    body = orjson.dumps(
        {"id": event_id, "type": event_type, "created_at": rfc3339_ms(created_ms), "data": data},
        # Sorted keys make the bytes a function of the content, so a replay signs the same body.
        option=orjson.OPT_SORT_KEYS,
    )
    return Event(id=event_id, type=event_type, created_ms=created_ms, body=body)


def click_event(click: Mapping[str, Any], link: Mapping[str, Any] | None = None) -> Event:
    """Return the ``click`` event of an enriched click; its id is derived from the click id."""
    event_id = "evt_" + uuid.UUID(click["click_id"]).hex
    data = {"click": _project("click", click), "link": _project("link", link) if link is not None else None}
    return _serialize(event_id, "click", click["ts_ms"], data)


def link_event(event_type: str, link: Mapping[str, Any], *, at_ms: int | None = None) -> Event:
    """Return a link.created/updated/deleted event; its id is derived from the link and its version."""
    if event_type not in LINK_EVENT_TYPES:
        raise ValueError(f"not a link event type: {event_type!r}")
    created_ms = link["updated_ms"] if at_ms is None else at_ms
    event_id = derived_event_id(event_type, link["id"], created_ms)
    return _serialize(event_id, event_type, created_ms, {"link": _project("link", link)})


def webhook_disabled_event(subscription: Mapping[str, Any], reason: str, *, at_ms: int) -> Event:
    """Return the ``webhook.disabled`` event telling a subscription's owner why deliveries stopped."""
    data = {"webhook": _project("webhook", subscription), "reason": reason}
    return _serialize(
        derived_event_id("webhook.disabled", subscription["id"], at_ms), "webhook.disabled", at_ms, data
    )


def ping_event(subscription: Mapping[str, Any], *, at_ms: int, message: str = "ping") -> Event:
    """Return a ``ping`` event for checking an endpoint; every call gets a new id."""
    data = {"webhook": _project("webhook", subscription), "message": message}
    return _serialize(fresh_event_id(), "ping", at_ms, data)


def derived_event(record: Mapping[str, Any]) -> Event:
    """Return the webhook event of a derived_event.avsc record; its id was derived by the patterns service."""
    if record["type"] not in DERIVED_EVENT_TYPES:
        raise ValueError(f"not a derived event type: {record['type']!r}")
    data = orjson.loads(record["data_json"])
    if not isinstance(data, dict):
        raise ValueError("data_json is not a JSON object")
    return _serialize(record["event_id"], record["type"], record["created_ms"], data)
