"""The patterns service against the real broker: exactly the expected derived events, once each, across a restart."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest

from tests.integration.patterns.conftest import Kit, click, link, summary

pytestmark = [pytest.mark.kafka]

THRESHOLDS = {
    "milestones": {"counts": [10, 20]},
    "spikes": {"window_s": 2, "baseline_s": 20, "factor": 3.0, "min_count": 15, "cooldown_s": 600,
               "dimensions": ["country"]},
    "suspicious": {"window_s": 600, "min_count": 20, "min_share": 0.5, "trust_below": 40, "ip_min": 1000,
                   "asn_min": 100_000},
}
COUNTRIES = ("DE", "US", "GB")


def steady(lk: dict[str, Any], start_ms: int, n: int, step_ms: int = 500) -> list[dict[str, Any]]:
    """``n`` human clicks every ``step_ms`` from ``start_ms``, countries in rotation."""
    return [click(lk, ts_ms=start_ms + i * step_ms, country=COUNTRIES[i % 3]) for i in range(n)]


def delays(events: list[dict[str, Any]]) -> dict[str, int]:
    """Worst event-time -> produced delay (ms) per type, for events whose event time is live."""
    worst: dict[str, int] = {}
    for e in events:
        worst[e["type"]] = max(worst.get(e["type"], 0), e["detected_ms"] - e["created_ms"])
    return worst


async def test_steady_spike_bot_burst_and_milestones_once_each_across_a_restart(kit: Kit) -> None:
    """Steady links raise only milestones, a one-country spike and a bot burst raise one event each, and
    a restart mid-window neither repeats an event nor forgets the counts and windows behind it."""
    ws = "ws_patterns"
    await kit.thresholds(ws, THRESHOLDS)
    steady_link = link(ws, campaign="c-steady", tags=("promo",))
    spiky = link(ws)
    bots = link(ws)
    t0 = int(time.time() * 1000) - 12_000  # 12 s of history before the live part
    first_half = steady(steady_link, t0, 12) + steady(spiky, t0, 12)
    first_half += [click(bots, is_bot=True, bot_kind="crawler", trust=10, signals=("datacenter_asn",))
                   for _ in range(15)]
    await kit.start()
    await kit.clicks(first_half)
    # Milestone 10 of the steady link, its campaign and tag, and of the spiky link.
    before = await kit.derived(lambda es: len(es) >= 4, settle_s=0.5)
    assert Counter(e["type"] for e in before) == {"milestone.reached": 4}, summary(before)

    await kit.stop_all()  # restart mid-window: counts, spike history and the bot window must survive
    await kit.start()
    second_half = steady(steady_link, t0 + 6_000, 12) + steady(spiky, t0 + 6_000, 12)
    second_half += [click(bots, is_bot=True, bot_kind="crawler", trust=10, signals=("datacenter_asn",))
                    for _ in range(15)]
    second_half += [click(bots) for _ in range(5)]
    second_half += [click(spiky, country="FR") for _ in range(20)]  # live: the spike
    await kit.clicks(second_half)
    events = await kit.derived(lambda es: len(es) >= 10, settle_s=2.0)

    got = Counter((e["type"], e["entity_kind"], e["entity_id"], e["country"]) for e in events)
    assert got == Counter({
        ("milestone.reached", "link", steady_link["id"], ""): 2,
        ("milestone.reached", "campaign", "c-steady", ""): 2,
        ("milestone.reached", "tag", "promo", ""): 2,
        ("milestone.reached", "link", spiky["id"], ""): 2,
        ("traffic.spike", "link", spiky["id"], "FR"): 1,
        ("traffic.suspicious", "link", bots["id"], ""): 1,
    }), summary(events)
    assert len({e["event_id"] for e in events}) == len(events)
    thresholds = sorted(orjson.loads(e["data_json"])["milestone"]["threshold"]
                        for e in events if e["type"] == "milestone.reached")
    assert thresholds == [10] * 4 + [20] * 4
    suspicious = next(orjson.loads(e["data_json"]) for e in events if e["type"] == "traffic.suspicious")
    assert suspicious["suspicious"]["bot_clicks"] == 20  # the click that crossed min_count
    assert suspicious["suspicious"]["reasons"] == ["low_trust_burst"]
    assert {"signal": "datacenter_asn", "clicks": 20} in suspicious["suspicious"]["top_signals"]
    live = [e for e in events if e["type"] in ("traffic.spike", "traffic.suspicious")]
    worst = delays(live)
    print(f"\ndetection delay, event time -> derived event produced (worst, ms): {worst}")
    assert all(ms < 5_000 for ms in worst.values()), worst
