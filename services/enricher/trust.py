"""Trust scoring: turns the names of fired signals into trust_score, is_bot and bot_kind, with every
weight and threshold read from data/signals.toml."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

DATA_FILE = Path(__file__).with_name("data") / "signals.toml"
BOT_KINDS = frozenset(
    {
        "crawler",
        "search_engine",
        "link_preview",
        "security_scanner",
        "monitor",
        "ai_agent",
        "automation",
        "headless",
    }
)


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal: how much it lowers trust, the bot kind it implies (if any), where it comes from."""

    name: str
    weight: int
    kind: str | None
    source: str
    order: int


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds that turn signals into a verdict."""

    bot_below: int = 50
    fallback_kind: str = "automation"
    fresh_link_seconds: int = 60
    velocity_per_minute: int = 20


@dataclass(frozen=True, slots=True)
class Verdict:
    """The trust part of an enriched click."""

    is_bot: bool
    bot_kind: str
    trust_score: int
    trust_signals: tuple[str, ...]


HUMAN = Verdict(False, "none", 100, ())


@dataclass(frozen=True)
class SignalBook:
    """Every known signal and the policy; scoring an unknown signal name is a programming error."""

    signals: Mapping[str, Signal]
    policy: Policy

    @classmethod
    def load(cls, path: Path = DATA_FILE) -> SignalBook:
        """Read signals.toml, rejecting unknown kinds, negative weights and entries without a source."""
        with path.open("rb") as f:
            doc = tomllib.load(f)
        raw_policy = dict(doc.get("policy", {}))
        raw_policy.pop("source", None)
        policy = Policy(**raw_policy)
        if policy.fallback_kind not in BOT_KINDS:
            raise ValueError(f"{path}: policy.fallback_kind {policy.fallback_kind!r} is not a bot kind")
        signals: dict[str, Signal] = {}
        for order, (name, entry) in enumerate(doc.get("signal", {}).items()):
            kind = entry.get("kind")
            weight = entry["weight"]
            if kind is not None and kind not in BOT_KINDS:
                raise ValueError(f"{path}: signal {name!r} has unknown kind {kind!r}")
            if not isinstance(weight, int) or weight < 0:
                raise ValueError(f"{path}: signal {name!r} needs a non-negative integer weight")
            if not entry.get("source"):
                raise ValueError(f"{path}: signal {name!r} has no source")
            signals[name] = Signal(name, weight, kind, entry["source"], order)
        return cls(MappingProxyType(signals), policy)

    def score(self, fired: Iterable[str]) -> Verdict:
        """Combine fired signals: trust = clamp(100 - sum of weights); bot when below policy.bot_below."""
        names = tuple(dict.fromkeys(fired))  # de-duplicated, first-fired order kept
        if not names:
            return HUMAN
        chosen = [self.signals[n] for n in names]
        trust = max(0, min(100, 100 - sum(s.weight for s in chosen)))
        if trust >= self.policy.bot_below:
            return Verdict(False, "none", trust, names)
        kinded = [s for s in chosen if s.kind is not None]
        if kinded:
            # Heaviest evidence names the kind; the file's order breaks ties.
            kind = min(kinded, key=lambda s: (-s.weight, s.order)).kind or self.policy.fallback_kind
        else:
            kind = self.policy.fallback_kind
        return Verdict(True, kind, trust, names)
