"""Which subscriptions an event goes to: webhook_subscription.avsc's ``event_types`` and ``filters``.

Rules, per subscription, all of which must hold:
- the event belongs to the subscription's workspace (never crossed, whatever the filters say);
- each list dimension (event types, link ids, domains, tags, campaigns, countries, device types,
  referrer classes) is a wildcard when empty, otherwise the event's value must be in it (tags: any
  of the event's tags);
- a bot click passes only when ``include_bots`` is true or ``bot_kinds`` is non-empty, and then only
  if ``bot_kinds`` is empty or names its kind; ``min_trust`` requires ``trust_score >= min_trust``.
Link events (link.created, ...) have no country, device, referrer, bot or trust: those filters do
not apply to them. Derived events (milestone.reached, traffic.spike, ...; ``is_derived``) are
matched like link events, plus ``countries`` / ``referrer_classes`` when the event has a country or
referrer class (a spike in one country); device, bot and trust filters do not apply to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CLICK_DIMENSIONS = (
    "event_types",
    "link_ids",
    "domains",
    "tags",
    "campaigns",
    "countries",
    "device_types",
    "referrer_classes",
)
LINK_DIMENSIONS = ("event_types", "link_ids", "domains", "tags", "campaigns")


@dataclass(frozen=True, slots=True)
class EventFacts:
    """The fields of an event that filters look at; ``is_click`` False means a link event."""

    type: str
    workspace_id: str
    link_id: str
    domain: str
    tags: tuple[str, ...]
    campaign: str | None
    is_click: bool = True
    is_derived: bool = False
    country: str = ""
    device_type: str = ""
    referrer_class: str = ""
    is_bot: bool = False
    bot_kind: str = "none"
    trust_score: int = 100

    @classmethod
    def from_click(cls, click: Mapping[str, Any]) -> EventFacts:
        """Return the facts of an enriched click (a dict shaped by enriched_click.avsc)."""
        return cls(
            type="click",
            workspace_id=click["workspace_id"],
            link_id=click["link_id"],
            domain=click["domain"].lower(),
            tags=tuple(click.get("tags") or ()),
            campaign=click.get("campaign"),
            country=(click.get("country") or "").upper(),
            device_type=click.get("device_type") or "other",
            referrer_class=click.get("referrer_class") or "direct",
            is_bot=bool(click.get("is_bot")),
            bot_kind=click.get("bot_kind") or "none",
            trust_score=int(click.get("trust_score", 100)),
        )

    @classmethod
    def from_link(cls, event_type: str, link: Mapping[str, Any]) -> EventFacts:
        """Return the facts of a link event (``link`` shaped by link.avsc)."""
        return cls(
            type=event_type,
            workspace_id=link["workspace_id"],
            link_id=link["id"],
            domain=link["domain"].lower(),
            tags=tuple(link.get("tags") or ()),
            campaign=link.get("campaign"),
            is_click=False,
        )

    @classmethod
    def from_derived(cls, record: Mapping[str, Any]) -> EventFacts:
        """Return the facts of a derived event (a dict shaped by derived_event.avsc)."""
        return cls(
            type=record["type"],
            workspace_id=record["workspace_id"],
            link_id=record.get("link_id") or "",
            domain=(record.get("domain") or "").lower(),
            tags=tuple(record.get("tags") or ()),
            campaign=record.get("campaign"),
            is_click=False,
            is_derived=True,
            country=(record.get("country") or "").upper(),
            referrer_class=record.get("referrer_class") or "",
        )

    dim_values: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once per event: each candidate subscription reads it, often several times.
        values = {
            "event_types": (self.type,),
            "link_ids": (self.link_id,),
            "domains": (self.domain,),
            "tags": self.tags,
            "campaigns": (self.campaign,) if self.campaign is not None else (),
            "countries": (self.country,),
            "device_types": (self.device_type,),
            "referrer_classes": (self.referrer_class,),
        }
        object.__setattr__(self, "dim_values", values)

    def values(self, dimension: str) -> tuple[str, ...]:
        """Return the event's values along one filter dimension (empty when it has none)."""
        return self.dim_values[dimension]


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A subscription's filters as sets, normalised the way EventFacts normalises events."""

    id: str
    workspace_id: str
    sets: Mapping[str, frozenset[str]]
    include_bots: bool
    bot_kinds: frozenset[str]
    min_trust: int | None
    click_dims: tuple[str, ...] = ()  # the dimensions this subscription constrains for clicks
    link_dims: tuple[str, ...] = ()  # ... and for link events

    @classmethod
    def from_subscription(cls, sub: Mapping[str, Any]) -> CompiledFilter:
        """Return the compiled filters of a subscription (a dict shaped by webhook_subscription.avsc)."""
        f = sub.get("filters") or {}
        sets = {
            "event_types": frozenset(sub.get("event_types") or ()),
            "link_ids": frozenset(f.get("link_ids") or ()),
            "domains": frozenset(d.lower() for d in f.get("domains") or ()),
            "tags": frozenset(f.get("tags") or ()),
            "campaigns": frozenset(f.get("campaigns") or ()),
            "countries": frozenset(c.upper() for c in f.get("countries") or ()),
            "device_types": frozenset(f.get("device_types") or ()),
            "referrer_classes": frozenset(f.get("referrer_classes") or ()),
        }
        return cls(
            id=sub["id"],
            workspace_id=sub["workspace_id"],
            sets=sets,
            include_bots=bool(f.get("include_bots", False)),
            bot_kinds=frozenset(f.get("bot_kinds") or ()),
            min_trust=f.get("min_trust"),
            click_dims=tuple(d for d in CLICK_DIMENSIONS if sets[d]),
            link_dims=tuple(d for d in LINK_DIMENSIONS if sets[d]),
        )

    def passes_scalar_filters(self, event: EventFacts) -> bool:
        """Return whether the bot and trust filters let ``event`` through (link events always pass)."""
        if not event.is_click:
            return True
        if event.is_bot:
            if not (self.include_bots or self.bot_kinds):
                return False
            if self.bot_kinds and event.bot_kind not in self.bot_kinds:
                return False
        return self.min_trust is None or event.trust_score >= self.min_trust


def matches(sub: Mapping[str, Any] | CompiledFilter, event: EventFacts) -> bool:
    """Return whether one subscription wants ``event``, checking every rule directly (the reference)."""
    f = sub if isinstance(sub, CompiledFilter) else CompiledFilter.from_subscription(sub)
    if f.workspace_id != event.workspace_id:
        return False
    values = event.dim_values
    for dim in f.click_dims if event.is_click else f.link_dims:
        if f.sets[dim].isdisjoint(values[dim]):
            return False
    if event.is_derived:
        # A derived event is filtered by country / referrer class only when it has one.
        if event.country and f.sets["countries"] and event.country not in f.sets["countries"]:
            return False
        if (event.referrer_class and f.sets["referrer_classes"]
                and event.referrer_class not in f.sets["referrer_classes"]):
            return False
    return f.passes_scalar_filters(event)


# Most selective first: a subscription is filed under the first dimension it constrains in this
# order, so an event only meets subscriptions that share its rarest value with it.
_ANCHOR_ORDER = (
    "link_ids",
    "campaigns",
    "tags",
    "domains",
    "referrer_classes",
    "countries",
    "device_types",
    "event_types",
)


class _Postings:
    """Subscriptions filed by their anchor dimension's values, for one event kind (click or link)."""

    __slots__ = ("anchors", "by_dim", "dims", "free")

    def __init__(self, dims: tuple[str, ...]) -> None:
        self.dims = tuple(d for d in _ANCHOR_ORDER if d in dims)
        self.by_dim: dict[str, dict[str, set[str]]] = {d: {} for d in self.dims}
        self.anchors: dict[str, str | None] = {}
        self.free: set[str] = set()  # constrains none of these dimensions: a candidate for every event

    def add(self, f: CompiledFilter) -> None:
        anchor = next((d for d in self.dims if f.sets[d]), None)
        self.anchors[f.id] = anchor
        if anchor is None:
            self.free.add(f.id)
            return
        postings = self.by_dim[anchor]
        for value in f.sets[anchor]:
            postings.setdefault(value, set()).add(f.id)

    def remove(self, f: CompiledFilter) -> None:
        anchor = self.anchors.pop(f.id)
        if anchor is None:
            self.free.discard(f.id)
            return
        postings = self.by_dim[anchor]
        for value in f.sets[anchor]:
            ids = postings[value]
            ids.discard(f.id)
            if not ids:
                del postings[value]

    def candidates(self, event: EventFacts) -> set[str]:
        found = set(self.free)
        for dim in self.dims:
            postings = self.by_dim[dim]
            if postings:
                for value in event.values(dim):
                    found.update(postings.get(value, ()))
        return found


class _Workspace:
    """One workspace's subscriptions with an inverted index per dimension, per event kind."""

    __slots__ = ("click", "filters", "link")

    def __init__(self) -> None:
        self.filters: dict[str, CompiledFilter] = {}
        self.click = _Postings(CLICK_DIMENSIONS)
        # Link events ignore click-only dimensions, so their anchors are chosen without them.
        self.link = _Postings(LINK_DIMENSIONS)

    def add(self, f: CompiledFilter) -> None:
        self.filters[f.id] = f
        self.click.add(f)
        self.link.add(f)

    def remove(self, sub_id: str) -> None:
        f = self.filters.pop(sub_id)
        self.click.remove(f)
        self.link.remove(f)

    def match(self, event: EventFacts) -> list[str]:
        postings = self.click if event.is_click else self.link
        return [sid for sid in postings.candidates(event) if matches(self.filters[sid], event)]


class SubscriptionIndex:
    """Enabled subscriptions indexed by workspace and filter values; follows upserts and deletes live."""

    def __init__(self, subscriptions: Iterable[Mapping[str, Any]] = ()) -> None:
        self._workspaces: dict[str, _Workspace] = {}
        self._where: dict[str, str] = {}  # subscription id -> workspace id
        for sub in subscriptions:
            self.upsert(sub)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, sub_id: object) -> bool:
        return sub_id in self._where

    def upsert(self, sub: Mapping[str, Any]) -> None:
        """Add or replace a subscription; a disabled one is removed (it receives nothing)."""
        self.remove(sub["id"])
        if not sub.get("enabled", True):
            return
        f = CompiledFilter.from_subscription(sub)
        self._workspaces.setdefault(f.workspace_id, _Workspace()).add(f)
        self._where[f.id] = f.workspace_id

    add = upsert
    update = upsert

    def remove(self, sub_id: str) -> None:
        """Forget a subscription (a tombstone on webhooks.subscriptions); unknown ids are ignored."""
        workspace_id = self._where.pop(sub_id, None)
        if workspace_id is None:
            return
        ws = self._workspaces[workspace_id]
        ws.remove(sub_id)
        if not ws.filters:
            del self._workspaces[workspace_id]

    def apply(self, sub_id: str, sub: Mapping[str, Any] | None) -> None:
        """Apply one record of the compacted subscriptions topic: a value upserts, None deletes."""
        if sub is None:
            self.remove(sub_id)
        else:
            self.upsert(sub)

    def match(self, event: EventFacts) -> list[str]:
        """Return the ids of the subscriptions that want ``event``, sorted."""
        ws = self._workspaces.get(event.workspace_id)
        return sorted(ws.match(event)) if ws is not None else []
