"""Webhook subscriptions, followed live from the compacted ``webhooks.subscriptions`` topic.

One :class:`Subscriptions` per process holds every subscription record (for the deliverer: URL,
secrets, mode, enabled) and the :class:`SubscriptionIndex` the router matches events against.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clickwire.codec import codec_for
from clickwire.follow import TopicTable
from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from services.dispatcher.filters import EventFacts, SubscriptionIndex

Subscription = dict[str, Any]
Listener = Callable[[str, Subscription | None], None]


class Subscriptions:
    """Every subscription by id plus the filter index, kept current by a TopicTable."""

    def __init__(self, common: CommonSettings) -> None:
        self.index = SubscriptionIndex()
        self._listeners: list[Listener] = []
        codec = codec_for(Topic.WEBHOOK_SUBSCRIPTIONS, common.schema_registry_url)
        self.table: TopicTable[Subscription] = TopicTable(
            common, Topic.WEBHOOK_SUBSCRIPTIONS, codec.decode, on_change=self._changed
        )

    def _changed(self, key: str, _old: Subscription | None, new: Subscription | None) -> None:
        self.index.apply(key, new)
        for listener in self._listeners:
            listener(key, new)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(id, record or None)`` after every change is applied."""
        self._listeners.append(listener)

    def get(self, sub_id: str) -> Subscription | None:
        """Return the latest record of a subscription, None when unknown or deleted."""
        return self.table.get(sub_id)

    def match(self, facts: EventFacts) -> list[str]:
        """Return the ids of the enabled subscriptions that want this event."""
        return self.index.match(facts)

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start following and wait until everything already on the topic is loaded."""
        await self.table.start()
        await self.table.wait_loaded(timeout_s)

    async def stop(self) -> None:
        """Stop following."""
        await self.table.stop()


def live_secrets(sub: Mapping[str, Any], now_ms: int | None = None) -> list[str]:
    """Return the secrets that sign now: the current one and rotated ones not yet expired, newest first."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    secrets: Sequence[Mapping[str, Any]] = sub.get("secrets") or ()
    live = [s["secret"] for s in secrets if s.get("expires_ms") is None or s["expires_ms"] > now]
    # A subscription whose every secret expired still signs with its newest rather than sending unsigned.
    return live or [s["secret"] for s in secrets[:1]]
