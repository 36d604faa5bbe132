"""milestone.reached: human clicks per link, campaign or tag, announced once per threshold.

State per entity (a JSON object in the ``counts`` table, changelog-backed):
``{"n": human clicks, "src": {clicks.enriched partition: last offset applied}, "emitted": [...], "first": ts}``.

Exactly once, across restarts and rebalances:
- a click is counted only if its (partition, offset) in clicks.enriched is past the entity's
  ``src`` mark, so the clicks replayed after a crash (and the duplicate forwards they cause) are
  not counted twice;
- a threshold is announced only if it is not in ``emitted``; the event is produced and acknowledged
  before the state that records it is written, and its id is a UUIDv5 of (workspace, entity,
  threshold), so the one duplicate a crash between the two can cause has the same id and is
  dropped by receivers (they dedupe on webhook-id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.dispatcher.payload import derived_event_id

State = dict[str, Any]


def new_state(ts_ms: int) -> State:
    """The state of an entity seen for the first time."""
    return {"n": 0, "src": {}, "emitted": [], "first": ts_ms}


def fresh(state: State, partition: int, offset: int) -> bool:
    """Whether the click at (partition, offset) was not applied to ``state`` yet; marks it applied."""
    key = str(partition)  # JSON object keys are strings: the changelog round-trips them as such
    seen = state["src"].get(key)
    if seen is not None and offset <= seen:
        return False
    state["src"][key] = offset
    return True


def count(state: State, thresholds: Sequence[int]) -> list[int]:
    """Count one human click; return the thresholds it reaches that were never announced."""
    state["n"] += 1
    n = state["n"]
    emitted = set(state["emitted"])
    return [t for t in thresholds if t == n and t not in emitted]


def milestone_id(workspace_id: str, kind: str, entity: str, threshold: int) -> str:
    """The event id of a milestone: the same on every emission of it."""
    return derived_event_id("milestone.reached", workspace_id, kind, entity, threshold)


def milestone_data(kind: str, entity: str, threshold: int, count_now: int,
                   link: dict[str, Any] | None, campaign: str | None) -> dict[str, Any]:
    """The ``data`` of a milestone.reached webhook (schemas/webhooks/milestone.reached.v1.json)."""
    return {"milestone": {"entity_kind": kind, "entity_id": entity, "threshold": threshold,
                          "human_clicks": count_now},
            "link": link, "campaign": campaign}
