"""traffic.spike: a link's or campaign's human clicks in one country (or referrer class) against its baseline.

State per (entity, dimension, value), a JSON object in the ``rates`` table:
``{"b": bucket ms, "n": {bucket start: clicks}, "hi": latest click ts, "last": last spike ts, "src": {...}}``.
Time is event time (the clicks' ``ts_ms``), so a replay decides exactly as the first pass did.

A click at ``hi`` makes a spike when, with ``W`` = window and ``B`` = baseline span:
- the window (hi - W, hi] holds at least ``min_count`` clicks of the key, and
- that is at least ``factor`` x the clicks the baseline predicts for a window: the key's clicks in
  [hi - W - B, hi - W] scaled to W over the part of that span the *entity* has existed, and
- the entity has at least one window of history before the current one (a new link has no baseline), and
- the key's last spike is more than ``cooldown`` ago.
A key with no earlier clicks (a country that never clicked before) has a baseline of 0, so
``min_count`` alone decides: that is the spike a marketer wants to hear about.
"""

from __future__ import annotations

from typing import Any

from services.dispatcher.payload import derived_event_id, rfc3339_ms
from services.patterns.thresholds import Spikes

State = dict[str, Any]
HOUR_MS = 3_600_000


def bucket_ms(window_s: int) -> int:
    """The bucket width for a window: six buckets a window, at least a second."""
    return max(1_000, window_s * 1_000 // 6)


def new_state(cfg: Spikes) -> State:
    """An empty key."""
    return {"b": bucket_ms(cfg.window_s), "n": {}, "hi": 0, "last": 0, "src": {}}


def observe(state: State, ts_ms: int, cfg: Spikes, entity_first_ms: int) -> dict[str, Any] | None:
    """Count one click; return the spike's measurements when it completes one (and start the cool-down)."""
    width = bucket_ms(cfg.window_s)
    if state.get("b") != width:  # the workspace changed its window: old buckets do not fit
        state.update(b=width, n={})
    window, baseline = cfg.window_s * 1_000, cfg.baseline_s * 1_000
    start = ts_ms - ts_ms % width
    buckets: dict[str, int] = state["n"]
    buckets[str(start)] = buckets.get(str(start), 0) + 1
    hi = state["hi"] = max(state["hi"], ts_ms)
    horizon = hi - window - baseline
    for key in [k for k in buckets if int(k) + width <= horizon]:
        del buckets[key]
    if ts_ms + window <= hi:
        return None  # a late click: counted, but it cannot complete the current window
    current = sum(n for k, n in buckets.items() if int(k) + width > hi - window)
    if current < cfg.min_count:
        return None
    history_from = max(entity_first_ms, horizon)
    span = hi - window - history_from
    if span < window:
        return None
    base = sum(n for k, n in buckets.items() if int(k) + width <= hi - window)
    expected = base * window / span
    if current < cfg.factor * expected:
        return None
    if state["last"] and hi - state["last"] < cfg.cooldown_s * 1_000:
        return None
    state["last"] = hi
    return {"observed": current, "expected": expected, "window_start_ms": hi - window, "window_end_ms": hi,
            "observed_per_hour": current * HOUR_MS / window, "baseline_per_hour": base * HOUR_MS / span}


def spike_id(workspace_id: str, kind: str, entity: str, dimension: str, value: str, at_ms: int) -> str:
    """The event id of a spike: derived from the key and the click that completed it."""
    return derived_event_id("traffic.spike", workspace_id, kind, entity, dimension, value, at_ms)


def spike_data(kind: str, entity: str, dimension: str, value: str, found: dict[str, Any], cfg: Spikes,
               link: dict[str, Any] | None, campaign: str | None) -> dict[str, Any]:
    """The ``data`` of a traffic.spike webhook (schemas/webhooks/traffic.spike.v1.json)."""
    return {
        "spike": {
            "entity_kind": kind, "entity_id": entity, "dimension": dimension, "value": value,
            "window": {"start": rfc3339_ms(found["window_start_ms"]), "end": rfc3339_ms(found["window_end_ms"]),
                       "seconds": cfg.window_s},
            "observed": found["observed"],
            "observed_per_hour": round(found["observed_per_hour"], 3),
            "baseline_per_hour": round(found["baseline_per_hour"], 3),
            "baseline_seconds": cfg.baseline_s,
            "factor": cfg.factor, "min_count": cfg.min_count,
        },
        "link": link, "campaign": campaign,
    }
