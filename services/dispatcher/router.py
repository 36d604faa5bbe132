"""The router: clicks, link changes and derived events -> one outbox record per matching subscription.

Consumer group ``clickwire-router`` on ``clicks.enriched``, ``links`` and ``events.derived`` (milestones,
spikes, ... from services/patterns: their body is built from the record's ``data_json`` and id).
Each event is serialized once (services.dispatcher.payload) and written to ``webhooks.outbox`` keyed
by subscription id, so the outbox's order per subscription is the order the router saw the events in. Input offsets are
committed only after every outbox record of their batch and of the batches before it is acknowledged
(while the next batches are routed), at most every COMMIT_INTERVAL_S and on revocation and stop: a
crash re-routes at most the uncommitted batches, and the deliveries carry the same event ids
(receivers dedupe by webhook-id).

Link events: a record whose ``created_ms == updated_ms`` is ``link.created``, any other value
``link.updated``, and a tombstone ``link.deleted``. A tombstone has no value, so the router follows
the links topic in a table of raw values and remembers recently deleted ones to describe the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter

from clickwire.codec import CodecError, codec_for
from clickwire.deadletter import DeadLetters, InvalidMessage
from clickwire.follow import TopicTable
from clickwire.kafka import key_partitioner, make_consumer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.dispatcher.filters import EventFacts
from services.dispatcher.payload import Event, click_event, derived_event, link_event
from services.dispatcher.subscriptions import Subscriptions

log = structlog.get_logger(__name__)

ROUTED = Counter("clickwire_router_events_total", "Events routed, by type", ["type"])
OUTBOX = Counter("clickwire_router_deliveries_total", "Outbox records written")
LINKS_DECODED_MAX = 4096  # decoded links kept for the clicks that keep coming to them
GRAVEYARD_MAX = 100_000  # deleted links remembered for link.deleted events still to route
# Routed batches whose outbox writes are not yet acknowledged, before routing waits. At 1,000 clicks/s
# a batch is a click or a few, and 4 capped routing at 4 batches per acknowledgement round trip.
MAX_ACKS_IN_FLIGHT = 32
# Acknowledged offsets are committed at most this often by default (and on revocation and stop), one commit in
# flight at a time. One commit per routed batch was ~360 OffsetCommit requests/s at 1,000 clicks/s, each
# a write to __consumer_offsets on the broker and a socket write here. A crash re-routes at most this
# much more; the re-sent deliveries carry the same event ids (receivers dedupe by webhook-id).
COMMIT_INTERVAL_S = 0.2


class _DrainCommits(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    def __init__(self, router: Router) -> None:
        self._router = router

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        with contextlib.suppress(Exception):  # a failed batch is re-routed by whoever gets the partition
            await self._router.drain_commits()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


class Router:
    """Routes clicks and link events to the outbox for every matching subscription."""

    def __init__(self, common: CommonSettings, subs: Subscriptions, producer: AIOKafkaProducer, *,
                 commit_interval_s: float = COMMIT_INTERVAL_S) -> None:
        prefix = common.topic_prefix
        self._common = common
        self._subs = subs
        self._producer = producer
        self.clicks_topic = name(Topic.CLICKS_ENRICHED, prefix)
        self.links_topic = name(Topic.LINKS, prefix)
        self.derived_topic = name(Topic.EVENTS_DERIVED, prefix)
        self._outbox = name(Topic.WEBHOOK_OUTBOX, prefix)
        self.group_id = f"{prefix}clickwire-router"
        self._click_codec = codec_for(Topic.CLICKS_ENRICHED, common.schema_registry_url)
        self._link_codec = codec_for(Topic.LINKS, common.schema_registry_url)
        self._derived_codec = codec_for(Topic.EVENTS_DERIVED, common.schema_registry_url)
        self._outbox_codec = codec_for(Topic.WEBHOOK_OUTBOX, common.schema_registry_url)
        # Keyed by the raw value: a changed link is new bytes, so a stale entry is never hit. Callers only read.
        self._decode_link = lru_cache(maxsize=LINKS_DECODED_MAX)(self._link_codec.decode)
        self._outbox_partition: Callable[[bytes], int] | None = None
        self._dead_letters = DeadLetters(common, producer, "router")
        # Raw Avro values, decoded on use: a few hundred bytes per link instead of a dict.
        self.links: TopicTable[bytes] = TopicTable(common, Topic.LINKS, bytes, on_change=self._link_changed)
        self._graveyard: OrderedDict[str, bytes] = OrderedDict()
        self.routed = 0
        self.written = 0
        # Per routed batch, a task that ends once its writes and every earlier batch's are acknowledged.
        self._acking: deque[asyncio.Task[None]] = deque()
        self._last_ack: asyncio.Task[None] | None = None
        self._acked: dict[TopicPartition, int] = {}  # acknowledged, not yet committed
        self._commit_interval_s = commit_interval_s
        self._committing: asyncio.Task[None] | None = None
        self._committed_at = float("-inf")
        self._consumer: AIOKafkaConsumer | None = None

    def _link_changed(self, key: str, old: bytes | None, new: bytes | None) -> None:
        if new is None and old is not None:
            self._graveyard[key] = old
            if len(self._graveyard) > GRAVEYARD_MAX:
                self._graveyard.popitem(last=False)

    def health(self) -> dict[str, object]:
        """The router's state for /health."""
        return {"routed": self.routed, "written": self.written, "links": len(self.links)}

    async def run(self, stop: asyncio.Event) -> None:
        """Route until ``stop`` is set; every batch is committed after its outbox writes are acknowledged."""
        await self.links.start()
        await self.links.wait_loaded(60)
        self._outbox_partition = key_partitioner(sorted(await self._producer.partitions_for(self._outbox)))
        consumer = self._consumer = make_consumer(self._common, group_id=self.group_id)
        # A revocation waits for the commits in flight, so none lands on a partition already given away.
        consumer.subscribe([self.clicks_topic, self.links_topic, self.derived_topic],
                           listener=_DrainCommits(self))
        await consumer.start()
        try:
            while not stop.is_set():
                self._check_commits()
                self._maybe_commit()
                batches = await consumer.getmany(timeout_ms=100, max_records=2000)
                if not batches:
                    continue
                acks: list[asyncio.Future[Any]] = []
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batches.items():
                    for record in records:
                        await self._route(record, acks)
                    offsets[tp] = records[-1].offset + 1
                # The next batch is routed while this one's writes are acknowledged: waiting here would
                # add an acknowledgement round trip to every event.
                self._acking.append(asyncio.create_task(self._ack_after(acks, offsets)))
                while len(self._acking) > MAX_ACKS_IN_FLIGHT:
                    await self._acking.popleft()
            await self.drain_commits()
        finally:
            for task in self._acking:
                task.cancel()
            if self._committing is not None:
                self._committing.cancel()
            await consumer.stop()
            await self.links.stop()

    async def _ack_after(self, acks: list[asyncio.Future[Any]], offsets: dict[TopicPartition, int]) -> None:
        """Mark ``offsets`` committable once every write of their batch is acknowledged, after the
        batches before it."""
        previous = self._last_ack
        self._last_ack = asyncio.current_task()
        if acks:
            await asyncio.gather(*acks)
        if previous is not None and not previous.done():
            await asyncio.shield(previous)  # offsets become committable in batch order
        self._acked.update(offsets)

    def _take_acked(self) -> dict[TopicPartition, int]:
        offsets, self._acked = self._acked, {}
        self._committed_at = time.monotonic()
        return offsets

    def _maybe_commit(self) -> None:
        """Commit what is acknowledged once the commit interval has passed, if no commit is in flight
        (_check_commits, called first, clears a finished one)."""
        if (self._acked and self._committing is None and self._consumer is not None
                and time.monotonic() - self._committed_at >= self._commit_interval_s):
            self._committing = asyncio.create_task(self._consumer.commit(self._take_acked()))

    def _check_commits(self) -> None:
        while self._acking and self._acking[0].done():
            self._acking.popleft().result()  # an unacknowledged write stops the router
        if self._committing is not None and self._committing.done():
            committing, self._committing = self._committing, None
            committing.result()  # so does a failed commit

    async def drain_commits(self) -> None:
        """Wait for every batch routed so far to be acknowledged, then commit it."""
        while self._acking:
            await self._acking.popleft()
        if self._committing is not None:
            committing, self._committing = self._committing, None
            await committing
        if self._acked and self._consumer is not None:
            await self._consumer.commit(self._take_acked())

    async def _route(self, record: Any, acks: list[asyncio.Future[Any]]) -> None:
        try:
            if record.topic == self.clicks_topic:
                click = self._click_codec.decode(record.value)
                facts: EventFacts | None = EventFacts.from_click(click)
                matched = self._subs.match(facts) if facts is not None else []
                # Most clicks match nobody: the body is built only for those that do.
                event = self._click_event(click) if matched else None
            elif record.topic == self.derived_topic:
                derived = self._derived_codec.decode(record.value)
                facts = EventFacts.from_derived(derived)
                matched = self._subs.match(facts)
                event = derived_event(derived) if matched else None
            else:
                event, facts = self._link(record)
                matched = self._subs.match(facts) if facts is not None else []
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            await self._dead_letters.send(InvalidMessage(
                record.topic, record.partition, record.offset, record.key, record.value or b"",
                type(exc).__name__, str(exc)))
            return
        if event is None:
            return
        self.routed += 1
        ROUTED.labels(event.type).inc()
        partition_of = self._outbox_partition
        assert partition_of is not None  # set in run() before routing
        for sub_id in matched:
            key = sub_id.encode()
            delivery = {"event_id": event.id, "subscription_id": sub_id, "event_type": event.type,
                        "created_ms": event.created_ms, "body": event.body, "attempt": 0, "not_before_ms": 0}
            acks.append(await self._producer.send(self._outbox, self._outbox_codec.encode(delivery),
                                                  key=key, partition=partition_of(key)))
            self.written += 1
            OUTBOX.inc()

    def _click_event(self, click: dict[str, Any]) -> Event:
        raw_link = self.links.get(f"{click['domain']}/{click['code']}")
        link = self._decode_link(raw_link) if raw_link is not None else None
        return click_event(click, link)

    def _link(self, record: Any) -> tuple[Event | None, EventFacts | None]:
        key = record.key.decode() if record.key is not None else None
        if record.value is None:
            if key is None:
                return None, None
            raw = self._graveyard.pop(key, None) or self.links.get(key)
            if raw is None:
                log.warning("link deleted before the router knew it; no link.deleted event", key=key)
                return None, None
            link = self._link_codec.decode(raw)
            at_ms = record.timestamp if record.timestamp and record.timestamp > 0 else int(time.time() * 1000)
            event_type = "link.deleted"
            event = link_event(event_type, link, at_ms=at_ms)
        else:
            link = self._link_codec.decode(record.value)
            event_type = "link.created" if link["created_ms"] == link["updated_ms"] else "link.updated"
            event = link_event(event_type, link)
        return event, EventFacts.from_link(event_type, link)
