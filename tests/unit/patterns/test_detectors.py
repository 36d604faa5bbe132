"""The pure pattern rules: offsets, milestones, spikes, suspicious windows, link state, thresholds, payloads."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from services.dispatcher.filters import EventFacts, SubscriptionIndex
from services.dispatcher.payload import DERIVED_EVENT_TYPES, derived_event, load_schema, schema_dir
from services.patterns import destinations as dest
from services.patterns import milestones, spikes, suspicious
from services.patterns.thresholds import DEFAULTS, ThresholdBook, effective, encode_overrides

LINK = {"id": "lnk_1", "workspace_id": "ws", "domain": "clk.test", "code": "c1", "destination": "https://e.com/",
        "tags": ["promo"], "campaign": "spring", "blocked": False, "updated_ms": 5, "destination_flags": []}
SPIKES = effective({"spikes": {"window_s": 10, "baseline_s": 60, "factor": 3, "min_count": 5,
                              "cooldown_s": 100}}).spikes


def _validator(event_type: str) -> Draft202012Validator:
    docs = [json.loads(p.read_text()) for p in schema_dir().glob("*.json")]
    registry = Registry().with_resources([(d["$id"], Resource.from_contents(d)) for d in docs])
    return Draft202012Validator(load_schema(event_type), registry=registry,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_replayed_offsets_are_not_counted_twice() -> None:
    """A click at or before the partition's applied offset is refused; other partitions are independent."""
    state = milestones.new_state(0)
    assert milestones.fresh(state, 0, 5)
    assert not milestones.fresh(state, 0, 5)
    assert not milestones.fresh(state, 0, 4)
    assert milestones.fresh(state, 1, 0)
    assert milestones.fresh(state, 0, 6)


def test_milestones_fire_once_at_each_threshold() -> None:
    """Counting 1..25 with thresholds 10 and 20 reaches each exactly once; ids are deterministic."""
    state = milestones.new_state(0)
    reached = [t for _ in range(25) for t in milestones.count(state, (10, 20))]
    assert reached == [10, 20]
    assert milestones.milestone_id("ws", "link", "l", 10) == milestones.milestone_id("ws", "link", "l", 10)
    assert milestones.milestone_id("ws", "link", "l", 10) != milestones.milestone_id("ws2", "link", "l", 10)


def test_steady_traffic_is_no_spike_and_a_burst_is_one() -> None:
    """One click a second for a minute never spikes; 40 in the next second do, once (cool-down)."""
    state = spikes.new_state(SPIKES)
    assert [spikes.observe(state, t * 1000, SPIKES, 0) for t in range(60)] == [None] * 60
    found = [spikes.observe(state, 60_000 + i, SPIKES, 0) for i in range(40)]
    hits = [f for f in found if f is not None]
    assert len(hits) == 1
    assert hits[0]["observed"] >= 3 * hits[0]["expected"]


def test_new_entity_has_no_baseline_and_never_spikes() -> None:
    """Without a window of history before the current one, even a burst is not a spike."""
    state = spikes.new_state(SPIKES)
    assert all(spikes.observe(state, 1_000 + i, SPIKES, 1_000) is None for i in range(50))


def test_bot_burst_is_suspicious_once_per_window() -> None:
    """Bot clicks past min_count and min_share raise one alert with their signals; humans alone do not."""
    cfg = effective({"suspicious": {"window_s": 60, "min_count": 5, "min_share": 0.5, "cooldown_s": 0}}).suspicious
    state = suspicious.new_state()
    humans = [suspicious.observe(state, {"ts_ms": i, "trust_score": 90, "ip": f"1.1.1.{i}"}, cfg) for i in range(4)]
    assert humans == [None] * 4
    bots = [suspicious.observe(state, {"ts_ms": 10 + i, "is_bot": True, "bot_kind": "crawler", "trust_score": 5,
                                       "trust_signals": ["ua_bot"], "ip": "9.9.9.9"}, cfg) for i in range(10)]
    hits = [b for b in bots if b is not None]
    assert len(hits) == 1
    assert hits[0]["reasons"] == ["low_trust_burst"]
    data = suspicious.suspicious_data(state, hits[0], cfg, dest.link_ref(LINK))
    assert data["suspicious"]["top_signals"][0] == {"signal": "bot:crawler", "clicks": 10}


def test_one_ip_hammering_is_found_among_many() -> None:
    """One IP past ip_min is reported even when more distinct IPs than counters were seen."""
    cfg = effective({"suspicious": {"ip_min": 50, "min_count": 10_000}}).suspicious
    state = suspicious.new_state()
    found = None
    for i in range(500):
        ip = "6.6.6.6" if i % 2 else f"10.0.{i // 256}.{i % 256}"
        found = found or suspicious.observe(state, {"ts_ms": i, "trust_score": 90, "ip": ip}, cfg)
    assert found is not None
    assert found["reasons"] == ["ip_hammering"]


def test_destination_failures_reported_once_per_run() -> None:
    """Three failures report once; more failures do not; a pass then three failures report again."""
    state = dest.new_state(LINK)
    bad, good = dest.Probe(False, 503, "http_status"), dest.Probe(True, 200, "")
    runs = [dest.checked(state, p, i, 3) for i, p in enumerate([bad] * 5 + [good] + [bad] * 3)]
    assert runs == [False, False, True, False, False, False, False, False, True]
    assert not dest.checked(state, dest.Probe(None, 0, "ssrf:private"), 99, 3)


def test_blocked_flip_only_from_false_to_true() -> None:
    """A link becoming blocked is a flip once; the same blocked version again, or a first sight, is not."""
    state, flipped = dest.link_changed(None, LINK)
    assert not flipped
    state, flipped = dest.link_changed(state, {**LINK, "blocked": True})
    assert flipped
    state, flipped = dest.link_changed(state, {**LINK, "blocked": True})
    assert not flipped


def test_thresholds_merge_overrides_and_refuse_nonsense() -> None:
    """Overrides replace only the keys given; unknown sections or keys and bad ranges raise."""
    got = effective({"spikes": {"factor": 5}})
    assert got.spikes.factor == 5
    assert got.spikes.window_s == DEFAULTS.spikes.window_s
    bad: dict[str, Any]
    for bad in ({"nope": {}}, {"spikes": {"nope": 1}}, {"spikes": {"window_s": 100, "baseline_s": 10}},
                {"milestones": {"counts": [0]}}):
        with pytest.raises(ValueError, match=r"\w"):  # pydantic's ValidationError is a ValueError
            effective(bad)
    book = ThresholdBook()
    book.apply("ws", encode_overrides("ws", {"milestones": {"counts": [5, 3, 5]}}, 1))
    assert book.get("ws").milestones.counts == (3, 5)
    assert book.get("other") == DEFAULTS


def _derived(event_type: str, data: dict[str, object], **extra: object) -> dict[str, object]:
    return {"event_id": "evt_" + "0" * 32, "type": event_type, "workspace_id": "ws", "created_ms": 1_700_000_000_000,
            "detected_ms": 1_700_000_000_010, "entity_kind": "link", "entity_id": "lnk_1", "link_id": "lnk_1",
            "domain": "clk.test", "tags": ["promo"], "campaign": "spring", "country": "", "referrer_class": "",
            "data_json": orjson.dumps(data).decode(), **extra}


def _payloads() -> dict[str, dict[str, object]]:
    ref = dest.link_ref(LINK)
    state = dest.new_state(LINK)
    for i in range(3):
        dest.checked(state, dest.Probe(False, 0, "timeout"), 1_700_000_000_000 + i, 3)
    cfg = DEFAULTS.suspicious
    sus = suspicious.new_state()
    sus.update(total=30, bots=25, low=25, signals={"bot:crawler": 25}, ips={"1.2.3.4": 25}, asns={"16509|AMAZON": 25})
    found = {"reasons": ["low_trust_burst"], "window_start_ms": 1_700_000_000_000, "window_end_ms": 1_700_000_060_000}
    spike = {"observed": 30, "expected": 2.0, "window_start_ms": 1_700_000_000_000, "window_end_ms": 1_700_000_300_000,
             "observed_per_hour": 360.0, "baseline_per_hour": 24.0}
    return {
        "milestone.reached": milestones.milestone_data("link", "lnk_1", 100, 100, ref, "spring"),
        "traffic.spike": spikes.spike_data("campaign", "spring", "country", "FR", spike, DEFAULTS.spikes, None,
                                           "spring"),
        "traffic.suspicious": suspicious.suspicious_data(sus, found, cfg, ref),
        "link.destination_failing": dest.failing_data(state, 1_700_000_000_002),
        "link.blocked": dest.blocked_data({**LINK, "blocked": True, "destination_flags": ["blocklisted"]}),
    }


@pytest.mark.parametrize("event_type", DERIVED_EVENT_TYPES)
def test_derived_payloads_validate_against_their_schema(event_type: str) -> None:
    """The body the dispatcher builds from each derived record validates against its type's schema only."""
    body = orjson.loads(derived_event(_derived(event_type, _payloads()[event_type])).body)
    assert list(_validator(event_type).iter_errors(body)) == []
    other = next(t for t in DERIVED_EVENT_TYPES if t != event_type)
    assert list(_validator(other).iter_errors(body)) != []


def test_derived_events_filter_like_link_events_plus_country() -> None:
    """Campaign and country filters apply to a spike in FR; device and bot filters do not."""
    subs = SubscriptionIndex()
    base = {"workspace_id": "ws", "event_types": ["traffic.spike"], "enabled": True}
    subs.upsert({**base, "id": "fr", "filters": {"countries": ["FR"], "device_types": ["mobile"]}})
    subs.upsert({**base, "id": "us", "filters": {"countries": ["US"]}})
    subs.upsert({**base, "id": "camp", "filters": {"campaigns": ["spring"]}})
    subs.upsert({**base, "id": "othercamp", "filters": {"campaigns": ["autumn"]}})
    subs.upsert({**base, "id": "clicks", "event_types": ["click"], "filters": {}})
    facts = EventFacts.from_derived(_derived("traffic.spike", {}, country="FR"))
    assert subs.match(facts) == ["camp", "fr"]
