"""Webhook payloads: built bodies validate against schemas/webhooks and serialize deterministically."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from services.dispatcher.payload import (
    EVENT_TYPES,
    click_event,
    link_event,
    load_schema,
    ping_event,
    schema_dir,
    webhook_disabled_event,
)

CLICK: dict[str, Any] = {
    "click_id": "01933b6e-8f3a-7c2e-9b1d-3f4a5b6c7d8e",
    "ts_ms": 1_700_000_000_123,
    "link_id": "lnk_1",
    "workspace_id": "ws_1",
    "domain": "go.example",
    "code": "spring",
    "method": "GET",
    "user_agent": "Mozilla/5.0",
    "referer": None,
    "accept_language": "en",
    "purpose": None,
    "ch_ua": None,
    "ch_ua_mobile": None,
    "ch_ua_platform": None,
    "query": "utm_source=x",
    "qr": False,
    "status": 302,
    "destination": "https://example.com/",
    "redirector_id": "r1",
    "ip": "203.0.113.0",
    "tags": ["spring"],
    "campaign": "spring",
    "utm_source": "x",
    "utm_medium": None,
    "utm_campaign": None,
    "utm_term": None,
    "utm_content": None,
    "link_created_ms": 1,
    "country": "DE",
    "region": "BE",
    "city": "Berlin",
    "latitude": 52.5,
    "longitude": 13.4,
    "asn": 3320,
    "as_org": "DTAG",
    "browser": "Firefox",
    "browser_version": "130",
    "os": "Linux",
    "os_version": "",
    "device_family": "Other",
    "device_type": "desktop",
    "referrer_host": "",
    "referrer_class": "direct",
    "is_bot": False,
    "bot_kind": "none",
    "bot_name": "",
    "trust_score": 97,
    "trust_signals": [],
    "visitor_hash": "abc",
    "enriched_ms": 1_700_000_000_200,
}
LINK: dict[str, Any] = {
    "id": "lnk_1",
    "workspace_id": "ws_1",
    "domain": "go.example",
    "code": "spring",
    "destination": "https://example.com/",
    "redirect_type": 302,
    "created_ms": 1,
    "updated_ms": 1_700_000_000_000,
    "expires_ms": None,
    "expired_url": None,
    "max_clicks": None,
    "tags": ["spring"],
    "campaign": "spring",
    "utm_source": None,
    "utm_medium": None,
    "utm_campaign": None,
    "utm_term": None,
    "utm_content": None,
    "rules": [],
    "bot_policy": "redirect",
    "preview_title": None,
    "preview_description": None,
    "preview_image": None,
    "destination_trust": 100,
    "destination_flags": [],
    "blocked": False,
}
SUB = {"id": "sub_1", "workspace_id": "ws_1", "url": "https://hooks.example.com/in", "secrets": []}


def _validator(event_type: str) -> Draft202012Validator:
    resources = [
        (doc["$id"], Resource.from_contents(doc))
        for doc in (json.loads(p.read_text()) for p in schema_dir().glob("*.json"))
    ]
    return Draft202012Validator(
        load_schema(event_type),
        registry=Registry().with_resources(resources),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _built() -> dict[str, bytes]:
    return {
        "click": click_event(CLICK, LINK).body,
        "link.created": link_event("link.created", LINK).body,
        "link.updated": link_event("link.updated", LINK).body,
        "link.deleted": link_event("link.deleted", LINK, at_ms=1_700_000_500_000).body,
        "webhook.disabled": webhook_disabled_event(SUB, "endpoint_gone", at_ms=1_700_000_000_000).body,
        "ping": ping_event(SUB, at_ms=1_700_000_000_000).body,
    }


def test_every_schema_is_valid_draft_2020_12() -> None:
    """Each schema file is itself a valid draft 2020-12 schema, and one exists per event type."""
    for event_type in EVENT_TYPES:
        schema = load_schema(event_type)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["type"] == {"const": event_type}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_built_payloads_validate(event_type: str) -> None:
    """The body built for each event type validates against that type's schema and no other type's."""
    body = orjson.loads(_built()[event_type])
    errors = list(_validator(event_type).iter_errors(body))
    assert errors == []
    other = next(t for t in EVENT_TYPES if t != event_type)
    assert list(_validator(other).iter_errors(body)) != []


def test_orphan_click_has_null_link_and_validates() -> None:
    """A click without a known link sends data.link = null, which the schema accepts."""
    body = orjson.loads(click_event(CLICK).body)
    assert body["data"]["link"] is None
    assert list(_validator("click").iter_errors(body)) == []


def test_envelope_and_public_fields_only() -> None:
    """The envelope carries id, type, created_at and data; internal fields never leave."""
    event = click_event(CLICK, LINK)
    body = orjson.loads(event.body)
    assert body["id"] == event.id == "evt_01933b6e8f3a7c2e9b1d3f4a5b6c7d8e"
    assert (body["type"], body["created_at"]) == ("click", "2023-11-14T22:13:20.123Z")
    assert event.created_ms == CLICK["ts_ms"]
    for internal in ("redirector_id", "enriched_ms", "accept_language", "status", "ch_ua"):
        assert internal not in body["data"]["click"]
    assert "rules" not in body["data"]["link"]
    assert "bot_policy" not in body["data"]["link"]
    assert body["data"]["click"]["trust_score"] == 97


def test_serialization_is_deterministic() -> None:
    """The same content in any key order gives byte-identical bodies with sorted keys, and the same id."""
    shuffled = dict(reversed(list(CLICK.items())))
    a, b = click_event(CLICK, LINK), click_event(shuffled, dict(reversed(list(LINK.items()))))
    assert a == b
    assert a.body.startswith(b'{"created_at":')
    assert link_event("link.updated", LINK).id == link_event("link.updated", LINK).id
    assert link_event("link.updated", LINK).id != link_event("link.created", LINK).id


def test_ping_ids_are_fresh() -> None:
    """Each ping is a new event with its own id."""
    assert ping_event(SUB, at_ms=1).id != ping_event(SUB, at_ms=1).id


def test_missing_published_field_raises() -> None:
    """A click lacking a field the schema publishes is an error, not a silently thinner payload."""
    broken = {k: v for k, v in CLICK.items() if k != "trust_score"}
    with pytest.raises(KeyError):
        click_event(broken)
