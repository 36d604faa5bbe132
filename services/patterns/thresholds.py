"""Per-workspace thresholds for derived events: built-in defaults plus the overrides a workspace PUT.

The overrides live on the compacted ``workspace.settings`` topic (key = workspace id, the JSON of a
partial :class:`EventThresholds` in ``events_json``); the API writes them, every patterns worker
follows them. A section or key a workspace did not set keeps the default, so new knobs reach
every workspace without a migration. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)

EntityKind = Literal["link", "campaign", "tag"]
SpikeDimension = Literal["country", "referrer_class"]


class Milestones(BaseModel):
    """milestone.reached: human-click counts at which a link, campaign or tag is announced."""

    model_config = _STRICT

    counts: tuple[int, ...] = Field((100, 1_000, 10_000, 100_000), min_length=0, max_length=50,
                                    description="Human-click counts to announce, each once")
    entities: tuple[EntityKind, ...] = Field(("link", "campaign", "tag"), description="What is counted")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if any(c < 1 for c in self.counts):
            raise ValueError("milestone counts must be >= 1")
        object.__setattr__(self, "counts", tuple(sorted(set(self.counts))))
        return self


class Spikes(BaseModel):
    """traffic.spike: human clicks of a link or campaign in one country or referrer class vs its baseline."""

    model_config = _STRICT

    window_s: int = Field(300, ge=1, le=86_400, description="The window clicks are counted in (the last N seconds)")
    baseline_s: int = Field(3_600, ge=2, le=7 * 86_400, description="History the baseline rate is taken from")
    factor: float = Field(3.0, ge=1.0, le=1_000.0, description="Observed must be at least factor x baseline")
    min_count: int = Field(20, ge=1, le=10_000_000, description="And at least this many clicks in the window")
    cooldown_s: int = Field(1_800, ge=0, le=7 * 86_400, description="No second spike for the same key before this")
    dimensions: tuple[SpikeDimension, ...] = Field(("country", "referrer_class"))
    entities: tuple[Literal["link", "campaign"], ...] = Field(("link", "campaign"))

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.baseline_s < self.window_s:
            raise ValueError("baseline_s must be at least window_s")
        return self


class Suspicious(BaseModel):
    """traffic.suspicious: bot or low-trust bursts on a link, or one IP / network hammering it."""

    model_config = _STRICT

    window_s: int = Field(60, ge=1, le=86_400, description="Tumbling window the clicks are judged in")
    min_count: int = Field(20, ge=1, description="Bot or low-trust clicks in the window ...")
    min_share: float = Field(0.5, ge=0.0, le=1.0, description="... making up at least this share of its clicks")
    trust_below: int = Field(40, ge=0, le=101, description="A click with trust_score below this is low-trust")
    ip_min: int = Field(30, ge=1, description="Clicks from one IP in the window that count as hammering")
    asn_min: int = Field(500, ge=1, description="Clicks from one network (ASN) in the window ...")
    asn_share: float = Field(0.9, ge=0.0, le=1.0, description="... making up at least this share of its clicks")
    cooldown_s: int = Field(600, ge=0, le=7 * 86_400, description="No second alert for the link before this")


class Destinations(BaseModel):
    """link.destination_failing: consecutive failed checks before a link's destination is reported."""

    model_config = _STRICT

    fail_after: int = Field(3, ge=1, le=100, description="Consecutive failed checks before reporting")


class EventThresholds(BaseModel):
    """Every threshold of the derived events of one workspace."""

    model_config = _STRICT

    milestones: Milestones = Field(default_factory=lambda: Milestones.model_validate({}))
    spikes: Spikes = Field(default_factory=lambda: Spikes.model_validate({}))
    suspicious: Suspicious = Field(default_factory=lambda: Suspicious.model_validate({}))
    destinations: Destinations = Field(default_factory=lambda: Destinations.model_validate({}))


DEFAULTS = EventThresholds.model_validate({})
SECTIONS = tuple(EventThresholds.model_fields)


def effective(overrides: Mapping[str, Any] | None, *, strict: bool = False) -> EventThresholds:
    """The thresholds a workspace gets: defaults, with each key it overrode replaced (raises ValueError).

    ``strict`` (the API, judging a request body): JSON types must match exactly, as everywhere in
    the API, so ``"25"`` or ``true`` for a count is refused instead of coerced and stored as sent.
    """
    merged: dict[str, Any] = DEFAULTS.model_dump()
    for section, values in (overrides or {}).items():
        if section not in merged or not isinstance(values, Mapping):
            raise ValueError(f"unknown or malformed section {section!r}")
        merged[section] = {**merged[section], **values}
    if strict:
        return EventThresholds.model_validate_json(orjson.dumps(merged), strict=True)
    return EventThresholds.model_validate(merged)


def encode_overrides(workspace_id: str, overrides: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """The workspace_settings.avsc record holding a workspace's overrides."""
    return {"workspace_id": workspace_id, "events_json": orjson.dumps(dict(overrides)).decode(),
            "updated_ms": now_ms}


def decode_overrides(record: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides inside a workspace_settings.avsc record."""
    loaded = orjson.loads(record["events_json"])
    if not isinstance(loaded, dict):
        raise ValueError("events_json is not an object")
    return loaded


class ThresholdBook:
    """Effective thresholds per workspace, fed by the workspace.settings topic (a bad record keeps defaults)."""

    def __init__(self) -> None:
        self._by_workspace: dict[str, EventThresholds] = {}

    def apply(self, workspace_id: str, record: Mapping[str, Any] | None) -> None:
        """Apply one record of workspace.settings (None: back to the defaults)."""
        if record is None:
            self._by_workspace.pop(workspace_id, None)
            return
        try:
            self._by_workspace[workspace_id] = effective(decode_overrides(record))
        except ValueError:
            # The API validates before writing; an unreadable record must not stop detection.
            self._by_workspace.pop(workspace_id, None)

    def get(self, workspace_id: str) -> EventThresholds:
        """The workspace's thresholds."""
        return self._by_workspace.get(workspace_id, DEFAULTS)
