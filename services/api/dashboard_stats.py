"""What the live dashboard shows, aggregated per workspace: pure, no I/O (services/api/dashboard.py feeds it).

Everything is bounded: per-second buckets for the last ``WINDOW_S`` seconds (each with at most
``MAX_KEYS`` links, campaigns and countries; the rest count under ``OTHER``), the latest
``LATEST`` clicks, per-minute delivery counts per subscription, and at most ``MAX_WORKSPACES``
workspaces (the least recently active one without viewers is dropped first).

Viewers get deltas: every change bumps the workspace's ``version``; a bucket remembers the version
that last touched it and a click its sequence number, so an update carries only what a viewer has
not seen yet.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

WINDOW_S: Final = 600
LATEST: Final = 50
MAX_KEYS: Final = 200
MAX_WORKSPACES: Final = 1000
MAX_SUBSCRIPTIONS: Final = 10_000
TOP: Final = 20
OTHER: Final = "(other)"
NO_CAMPAIGN: Final = "(none)"
NO_COUNTRY: Final = "??"
# What the webhook dispatcher writes as outcome (webhook_attempt.avsc); everything but success failed.
SUCCESS: Final = "success"


def _bump(counter: Counter[str], key: str, n: int = 1) -> None:
    # A flood of distinct keys (scanners on many links) must not grow a bucket without bound.
    if key not in counter and len(counter) >= MAX_KEYS:
        key = OTHER
    counter[key] += n


def _drop(counter: Counter[str], other: Mapping[str, int]) -> None:
    for key, n in other.items():
        left = counter[key] - n
        if left > 0:
            counter[key] = left
        else:
            del counter[key]


@dataclass
class Bucket:
    """The clicks of one second (by the redirector's timestamp)."""

    sec: int
    version: int = 0
    links: Counter[str] = field(default_factory=Counter)
    campaigns: Counter[str] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)
    bot_kinds: Counter[str] = field(default_factory=Counter)
    humans: int = 0

    def view(self) -> dict[str, Any]:
        """The bucket as the page draws it."""
        return {"t": self.sec, "links": dict(self.links), "campaigns": dict(self.campaigns),
                "humans": self.humans, "bots": sum(self.bot_kinds.values())}


@dataclass
class Totals:
    """Running sums over the buckets currently in the window."""

    links: Counter[str] = field(default_factory=Counter)
    campaigns: Counter[str] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)
    bot_kinds: Counter[str] = field(default_factory=Counter)
    humans: int = 0

    def add(self, bucket: Bucket, sign: int) -> None:
        """Add (sign 1) or remove (sign -1) a whole bucket."""
        for mine, theirs in ((self.links, bucket.links), (self.campaigns, bucket.campaigns),
                             (self.countries, bucket.countries), (self.bot_kinds, bucket.bot_kinds)):
            if sign > 0:
                mine.update(theirs)
            else:
                _drop(mine, theirs)
        self.humans += sign * bucket.humans

    def view(self) -> dict[str, Any]:
        """Totals as the page shows them (top entries only for the open-ended keys)."""
        bots = sum(self.bot_kinds.values())
        return {"clicks": self.humans + bots, "humans": self.humans, "bots": bots,
                "bot_kinds": dict(self.bot_kinds.most_common()),
                "countries": self.countries.most_common(TOP),
                "links": self.links.most_common(TOP), "campaigns": self.campaigns.most_common(TOP)}


@dataclass
class Delivery:
    """Delivery health of one subscription: per-minute counts plus the last attempt."""

    minutes: deque[list[int]] = field(default_factory=lambda: deque(maxlen=WINDOW_S // 60 + 1))
    last_status: int | None = None
    last_latency_ms: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    last_ms: int = 0

    def add(self, attempt: Mapping[str, Any]) -> None:
        """Count one attempt from webhooks.attempts."""
        minute = attempt["ts_ms"] // 60_000
        ok = attempt["outcome"] == SUCCESS
        slot = next((m for m in self.minutes if m[0] == minute), None)
        if slot is None:
            slot = [minute, 0, 0]
            if not self.minutes or minute > self.minutes[-1][0]:
                self.minutes.append(slot)  # the usual case: attempts arrive in order per subscription
            elif len(self.minutes) < (self.minutes.maxlen or 0):
                at = next(i for i, m in enumerate(self.minutes) if m[0] > minute)
                self.minutes.insert(at, slot)
            # else: older than every minute kept, so it counts only as the last attempt if it is one
        slot[1 if ok else 2] += 1
        if attempt["ts_ms"] >= self.last_ms:
            self.last_ms = attempt["ts_ms"]
            self.last_status = attempt["status"]
            self.last_latency_ms = round(float(attempt["latency_ms"]), 1)
            self.last_outcome = attempt["outcome"]
            self.last_error = attempt.get("error_class")

    def view(self, subscription_id: str, info: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
        """Counts over the window and the last attempt, with the subscription's url and description."""
        first = (now_ms // 1000 - WINDOW_S) // 60
        recent = [m for m in self.minutes if m[0] >= first]
        return {"id": subscription_id, "url": info.get("url", ""), "description": info.get("description", ""),
                "enabled": info.get("enabled", True),
                "successes": sum(m[1] for m in recent), "failures": sum(m[2] for m in recent),
                "last_status": self.last_status, "last_latency_ms": self.last_latency_ms,
                "last_outcome": self.last_outcome, "last_error": self.last_error,
                "last_ms": self.last_ms or None}


def click_row(click: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """One row of the latest-clicks table (no IP, no user agent: the page does not need them)."""
    return {"seq": seq, "id": click["click_id"], "ts_ms": click["ts_ms"],
            "link": f"{click['domain']}/{click['code']}", "campaign": click.get("campaign") or "",
            "country": click.get("country") or "", "city": click.get("city") or "",
            "device": click.get("device_type") or "", "browser": click.get("browser") or "",
            "referrer": click.get("referrer_host") or click.get("referrer_class") or "",
            "is_bot": bool(click["is_bot"]), "bot_kind": click.get("bot_kind") or "none",
            "bot_name": click.get("bot_name") or "", "trust": click.get("trust_score", 100),
            "signals": list(click.get("trust_signals") or [])}


class Workspace:
    """The dashboard state of one workspace."""

    def __init__(self, workspace_id: str) -> None:
        self.id = workspace_id
        self.version = 0
        self.seq = 0
        self.buckets: dict[int, Bucket] = {}
        self.oldest = 0  # the earliest second in buckets (0 when empty): pruning is a compare most seconds
        self.totals = Totals()
        self.latest: deque[dict[str, Any]] = deque(maxlen=LATEST)
        self.viewers = 0
        self._changed = asyncio.Event()

    def add_click(self, click: Mapping[str, Any], now_s: int) -> None:
        """Count an enriched click (its second must be inside the window to reach the charts)."""
        self.seq += 1
        self.latest.append(click_row(click, self.seq))
        # A redirector clock ahead of ours would put clicks past the right edge of the chart.
        sec = min(click["ts_ms"] // 1000, now_s)
        if sec > now_s - WINDOW_S:
            bucket = self.buckets.get(sec)
            if bucket is None:
                bucket = self.buckets[sec] = Bucket(sec)
                self.oldest = min(self.oldest or sec, sec)
            link = f"{click['domain']}/{click['code']}"
            campaign = click.get("campaign") or NO_CAMPAIGN
            country = click.get("country") or NO_COUNTRY
            _bump(bucket.links, link)
            self.totals.links[link if link in bucket.links else OTHER] += 1
            _bump(bucket.campaigns, campaign)
            self.totals.campaigns[campaign if campaign in bucket.campaigns else OTHER] += 1
            _bump(bucket.countries, country)
            self.totals.countries[country if country in bucket.countries else OTHER] += 1
            if click["is_bot"]:
                kind = click.get("bot_kind") or "unknown"
                bucket.bot_kinds[kind] += 1
                self.totals.bot_kinds[kind] += 1
            else:
                bucket.humans += 1
                self.totals.humans += 1
            bucket.version = self.version + 1
        self.version += 1

    def prune(self, now_s: int) -> bool:
        """Drop the buckets that left the window; True when any did."""
        cutoff = now_s - WINDOW_S
        if not self.buckets or self.oldest > cutoff:
            return False
        for sec in [sec for sec in self.buckets if sec <= cutoff]:
            self.totals.add(self.buckets.pop(sec), -1)
        self.oldest = min(self.buckets, default=0)
        self.version += 1
        return True

    def notify(self) -> None:
        """Wake every viewer waiting in :meth:`wait`."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def waiter(self) -> asyncio.Event:
        """An event set at the next change (take it before reading the state, then wait on it)."""
        return self._changed

    def since(self, version: int, seq: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Buckets changed after version and clicks after seq, oldest first."""
        buckets = [b.view() for b in sorted(self.buckets.values(), key=lambda b: b.sec) if b.version > version]
        clicks = [row for row in self.latest if row["seq"] > seq]
        return buckets, clicks


class Board:
    """Every workspace's state plus delivery health per subscription, bounded."""

    def __init__(self) -> None:
        self.workspaces: OrderedDict[str, Workspace] = OrderedDict()
        self.deliveries: OrderedDict[str, Delivery] = OrderedDict()
        self.subscriptions: dict[str, dict[str, Any]] = {}  # id -> workspace_id, url, description, enabled
        self.by_workspace: dict[str, set[str]] = {}

    def workspace(self, workspace_id: str) -> Workspace:
        """The state of a workspace, created on first use (evicting an idle one past the limit)."""
        ws = self.workspaces.get(workspace_id)
        if ws is None:
            ws = self.workspaces[workspace_id] = Workspace(workspace_id)
            if len(self.workspaces) > MAX_WORKSPACES:
                idle = next((w for w in self.workspaces.values() if w.viewers == 0 and w is not ws), None)
                if idle is not None:
                    del self.workspaces[idle.id]
        self.workspaces.move_to_end(workspace_id)
        return ws

    def add_clicks(self, clicks: Iterable[Mapping[str, Any]], now_s: int) -> set[str]:
        """Count enriched clicks; returns the workspaces that changed (orphan clicks belong to none)."""
        touched: set[str] = set()
        for click in clicks:
            workspace_id = click["workspace_id"]
            if workspace_id:
                self.workspace(workspace_id).add_click(click, now_s)
                touched.add(workspace_id)
        return touched

    def add_attempts(self, attempts: Iterable[Mapping[str, Any]]) -> set[str]:
        """Count webhook attempts; returns the workspaces known to own them."""
        touched: set[str] = set()
        for attempt in attempts:
            sub = attempt["subscription_id"]
            delivery = self.deliveries.get(sub)
            if delivery is None:
                delivery = self.deliveries[sub] = Delivery()
                if len(self.deliveries) > MAX_SUBSCRIPTIONS:
                    self.deliveries.popitem(last=False)
            self.deliveries.move_to_end(sub)
            delivery.add(attempt)
            info = self.subscriptions.get(sub)
            if info is not None:
                touched.add(info["workspace_id"])
        return touched

    def set_subscription(self, subscription_id: str, record: Mapping[str, Any] | None) -> str | None:
        """Follow webhooks.subscriptions (None = deleted); returns the workspace whose list changed."""
        old = self.subscriptions.pop(subscription_id, None)
        if old is not None:
            self.by_workspace.get(old["workspace_id"], set()).discard(subscription_id)
        if record is None:
            return None if old is None else str(old["workspace_id"])
        info = {"workspace_id": record["workspace_id"], "url": record["url"],
                "description": record.get("description", ""), "enabled": record.get("enabled", True)}
        self.subscriptions[subscription_id] = info
        self.by_workspace.setdefault(info["workspace_id"], set()).add(subscription_id)
        return str(info["workspace_id"])

    def webhooks(self, workspace_id: str, now_ms: int) -> list[dict[str, Any]]:
        """Delivery health of every subscription of a workspace (ones without attempts too)."""
        out = []
        for sub in sorted(self.by_workspace.get(workspace_id, ())):
            delivery = self.deliveries.get(sub) or Delivery()
            out.append(delivery.view(sub, self.subscriptions[sub], now_ms))
        return out

    def snapshot(self, workspace_id: str, now_ms: int) -> dict[str, Any]:
        """Everything a viewer needs to draw the page from scratch."""
        ws = self.workspace(workspace_id)
        buckets, clicks = ws.since(-1, 0)
        return {"kind": "snapshot", "workspace": workspace_id, "window_s": WINDOW_S, "now_ms": now_ms,
                "version": ws.version, "buckets": buckets, "latest": clicks,
                "totals": ws.totals.view(), "webhooks": self.webhooks(workspace_id, now_ms)}

    def update(self, workspace_id: str, version: int, seq: int, now_ms: int) -> dict[str, Any]:
        """What changed for a viewer that has seen up to version and seq."""
        ws = self.workspace(workspace_id)
        buckets, clicks = ws.since(version, seq)
        return {"kind": "update", "workspace": workspace_id, "window_s": WINDOW_S, "now_ms": now_ms,
                "version": ws.version, "buckets": buckets, "latest": clicks,
                "totals": ws.totals.view(), "webhooks": self.webhooks(workspace_id, now_ms)}
