"""Webhook subscription model: validation, the Avro record, patching, rotation, attempt pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from clickwire.codec import codec_for
from clickwire.topics import Topic
from services.api.attempts import PAGE_SQL, attempts_page, decode_cursor, encode_cursor, parse_limit
from services.api.body import validate
from services.api.problems import Problem
from services.api.replay import replay_request
from services.api.subscriptions import (
    USER_DISABLED_REASON,
    ReplayBody,
    WebhookCreate,
    WebhookPatch,
    build_subscription,
    patch_subscription,
    public_view,
    rotate_secret,
)

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def create(body: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    """Validate a create body and build its record."""
    return build_subscription(validate(WebhookCreate, body), workspace_id="ws_a", secret=secret or "whsec_AAAA",
                              now_ms=NOW)


def errors_of(model: Any, body: Any) -> set[tuple[Any, ...]]:
    """The error locations a body gets from a model."""
    with pytest.raises(Problem) as caught:
        validate(model, body)
    assert caught.value.status == 422
    return {tuple(e["loc"]) for e in caught.value.extra["errors"]}


def test_defaults_encode_as_a_webhook_subscription_record() -> None:
    """A minimal body becomes a full record (click events, no filters but bots excluded) the codec accepts."""
    record = create({"url": " https://example.com/h "})
    assert record["url"] == "https://example.com/h"
    assert record["event_types"] == ["click"]
    assert record["filters"]["include_bots"] is False
    assert record["filters"]["min_trust"] is None
    assert record["mode"] == "single"
    assert record["secrets"] == [{"secret": "whsec_AAAA", "expires_ms": None}]
    assert record["id"].startswith("wh_")
    codec = codec_for(Topic.WEBHOOK_SUBSCRIPTIONS)
    assert codec.decode(codec.encode(record)) == record


def test_filter_values_are_normalized_and_deduplicated() -> None:
    """Countries upper-case, domains lower-case, repeats dropped in first-seen order."""
    record = create({"url": "https://example.com/h", "event_types": ["click", "ping", "click"],
                     "filters": {"countries": ["fr", "FR", "de"], "domains": ["Go.Example.COM"],
                                 "bot_kinds": ["link_preview"], "min_trust": 0}})
    assert record["event_types"] == ["click", "ping"]
    assert record["filters"]["countries"] == ["FR", "DE"]
    assert record["filters"]["domains"] == ["go.example.com"]
    assert record["filters"]["bot_kinds"] == ["link_preview"]
    assert record["filters"]["min_trust"] == 0


def test_strict_validation_names_every_bad_field() -> None:
    """Wrong JSON types, unknown vocabulary and unknown fields are each reported, never coerced."""
    locs = errors_of(WebhookCreate, {
        "url": "https://example.com/h", "batch_max": True, "batch_ms": "100", "mode": "stream",
        "event_types": ["link.clicked"], "filters": {"referrer_classes": ["tv"], "colour": "red"},
        "secret": "whsec_mine"})
    assert {("batch_max",), ("batch_ms",), ("mode",), ("event_types", 0), ("filters", "referrer_classes", 0),
            ("filters", "colour"), ("secret",)} <= locs
    assert ("batch_max",) in errors_of(WebhookCreate, {"url": "https://e.com", "batch_max": 1001})
    assert ("url",) in errors_of(WebhookCreate, {"url": ""})
    assert ("filters", "countries", 0) in errors_of(WebhookCreate, {"url": "https://e.com",
                                                                   "filters": {"countries": ["FRA"]}})


def test_patch_changes_only_given_fields_and_merges_filters() -> None:
    """A PATCH keeps what it does not name, merges filter keys, and bumps updated_ms."""
    record = create({"url": "https://example.com/h", "filters": {"countries": ["FR"], "tags": ["a"]}})
    patched = patch_subscription(record, validate(WebhookPatch, {"filters": {"tags": []}, "batch_max": 10}),
                                 now_ms=NOW)
    assert patched["filters"]["countries"] == ["FR"]
    assert patched["filters"]["tags"] == []
    assert patched["batch_max"] == 10
    assert patched["url"] == record["url"]
    assert patched["secrets"] == record["secrets"]
    assert patched["updated_ms"] == NOW + 1, "versions must increase even within one millisecond"
    for nulled in ({"url": None}, {"event_types": None}, {"filters": {"tags": None}}):
        with pytest.raises(Problem):
            validate(WebhookPatch, nulled)
    assert validate(WebhookPatch, {"disabled_reason": None, "filters": {"min_trust": None}}) is not None


def test_disabling_records_a_reason_and_enabling_clears_it() -> None:
    """Disabled always has a reason (given or the API's); enabling drops it."""
    record = create({"url": "https://example.com/h"})
    off = patch_subscription(record, validate(WebhookPatch, {"enabled": False}), now_ms=NOW)
    assert off["disabled_reason"] == USER_DISABLED_REASON
    why = patch_subscription(record, validate(WebhookPatch, {"enabled": False, "disabled_reason": "maintenance"}),
                             now_ms=NOW)
    assert why["disabled_reason"] == "maintenance"
    still = patch_subscription(why, validate(WebhookPatch, {"description": "x"}), now_ms=NOW)
    assert still["disabled_reason"] == "maintenance"
    on = patch_subscription(why, validate(WebhookPatch, {"enabled": True}), now_ms=NOW)
    assert on["enabled"] is True
    assert on["disabled_reason"] is None


def test_rotation_keeps_live_secrets_and_drops_expired_ones() -> None:
    """The new secret signs first; old ones sign until now + grace at the latest; expired ones are dropped."""
    record = create({"url": "https://example.com/h"}, secret="whsec_OLD")
    record["secrets"].append({"secret": "whsec_GONE", "expires_ms": NOW - 1})
    rotated = rotate_secret(record, "whsec_NEW", now_ms=NOW, grace_s=60)
    assert rotated["secrets"] == [{"secret": "whsec_NEW", "expires_ms": None},
                                  {"secret": "whsec_OLD", "expires_ms": NOW + 60_000}]
    again = rotate_secret(rotated, "whsec_NEWER", now_ms=NOW + 1000, grace_s=3600)
    assert [s["expires_ms"] for s in again["secrets"]] == [None, NOW + 1000 + 3_600_000, NOW + 60_000]
    leaked = rotate_secret(again, "whsec_SAFE", now_ms=NOW + 2000, grace_s=0)
    assert [s["secret"] for s in leaked["secrets"]] == ["whsec_SAFE"], "a zero grace retires every old secret"
    shorter = rotate_secret(again, "whsec_SOON", now_ms=NOW + 2000, grace_s=30)
    assert [s["expires_ms"] for s in shorter["secrets"]] == [None, NOW + 32_000, NOW + 32_000, NOW + 32_000]


def test_public_view_never_contains_a_secret() -> None:
    """The API's view names when old secrets expire, never a secret value."""
    record = rotate_secret(create({"url": "https://example.com/h"}, secret="whsec_OLD"), "whsec_NEW",
                           now_ms=NOW, grace_s=60)
    view = public_view(record, now_ms=NOW)
    assert "whsec" not in repr(view)
    assert "secrets" not in view
    assert view["previous_secrets_expire_at"] == ["2026-01-01T00:01:00.000Z"]
    assert public_view(record, now_ms=NOW + 60_000)["previous_secrets_expire_at"] == []


def test_replay_body_needs_ids_or_a_zoned_start() -> None:
    """Replay takes event ids and/or an RFC 3339 range with a zone, with until after since."""
    req = replay_request(validate(ReplayBody, {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T02:00:00+01:00"}))
    assert (req.since_ms, req.until_ms) == (NOW, NOW + 3_600_000)
    with pytest.raises(Problem):  # 01:00+01:00 is the same instant as since
        validate(ReplayBody, {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T01:00:00+01:00"})
    ids = replay_request(validate(ReplayBody, {"event_ids": ["evt_1", "evt_1", "evt_2"]}))
    assert ids.event_ids == frozenset({"evt_1", "evt_2"})
    assert ids.since_ms is None
    bad_bodies: list[dict[str, Any]] = [{}, {"until": "2026-01-01T00:00:00Z"}, {"since": "2026-01-01T00:00:00"},
                                        {"event_ids": []}, {"event_ids": ["evt_1"], "extra": 1}]
    for bad in bad_bodies:
        with pytest.raises(Problem):
            validate(ReplayBody, bad)


class FakeSql:
    """Answers attempt queries from a list of rows, recording the parameters it got."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.calls: list[Mapping[str, Any]] = []

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Return at most params['limit'] rows below the cursor, newest first (as PAGE_SQL does)."""
        assert sql == PAGE_SQL
        self.calls.append(dict(params))
        key = (params["ts"], params["event_id"], params["attempt"])
        below = [r for r in self.rows if (r["ts"], r["event_id"], r["attempt"]) < key]
        return sorted(below, key=lambda r: (r["ts"], r["event_id"], r["attempt"]), reverse=True)[:params["limit"]]


async def test_attempt_pages_continue_from_the_last_row_served() -> None:
    """A page asks for one extra row to know if more exist, and its cursor is the last row it shows."""
    rows = [{"event_id": f"evt_{i}", "attempt": 1, "ts": NOW + i, "status": 200, "latency_ms": 1.0,
             "outcome": "success", "error_class": None, "response_excerpt": None, "next_ms": None} for i in range(5)]
    sql = FakeSql(rows)
    first = await attempts_page(sql, "wh_1", cursor=None, limit=2)
    assert [a["event_id"] for a in first["data"]] == ["evt_4", "evt_3"]
    assert sql.calls[0]["limit"] == 3
    assert sql.calls[0]["sub"] == "wh_1"
    assert decode_cursor(first["next_cursor"]) == (NOW + 3, "evt_3", 1)
    second = await attempts_page(sql, "wh_1", cursor=first["next_cursor"], limit=3)
    assert [a["event_id"] for a in second["data"]] == ["evt_2", "evt_1", "evt_0"]
    assert second["next_cursor"] is None


def test_cursors_and_limits_are_checked() -> None:
    """A cursor round-trips; a forged one or a bad limit is a 400 problem."""
    assert decode_cursor(encode_cursor(5, "evt_x", 2)) == (5, "evt_x", 2)
    for bad in ("", "bm9wZQ", encode_cursor(5, "evt_x", 2)[:-3]):
        with pytest.raises(Problem) as caught:
            decode_cursor(bad)
        assert caught.value.reason == "invalid_cursor"
    assert parse_limit(None) == 50
    assert parse_limit("500") == 500
    for bad in ("0", "501", "-1", "x"):
        with pytest.raises(Problem):
            parse_limit(bad)
