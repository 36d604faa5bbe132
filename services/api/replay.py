"""Replay: put a subscription's past deliveries back on webhooks.outbox, by event ids or by time range.

The outbox is the record of every event routed to a subscription (14 days' retention), keyed by
subscription id, so all of one subscription's deliveries sit in one partition, in order. A replay
reads that partition alone, from ``offsets_for_times(since)`` (or the beginning, for ids without a
range) up to ``offsets_for_times(until)`` (or the end offset seen when the scan started, so the
copies it writes are never read back), keeps the records of this subscription (and of the listed
ids), and produces them again with ``attempt`` reset to 0 — in their original order, so the
deliverer's per-subscription FIFO sends them in the order they first went out.

A copy keeps its event id, so receivers see the same ``webhook-id`` and the same body: a receiver
that deduplicates on ``webhook-id`` drops an event it already processed and takes one it never saw
(the usual reason to replay). Copies carry a ``clickwire-replay`` Kafka header for operators.

The scan is bounded: a deadline and a cap on records queued. When either stops it early the result
says ``complete: false`` and ``resume_from`` (the timestamp to pass as ``since`` to continue).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel, Field

from clickwire.codec import codec_for
from clickwire.kafka import FETCH_MAX_WAIT_MS
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.api.problems import Problem
from services.api.subscriptions import ReplayBody
from services.dispatcher.payload import rfc3339_ms

MAX_QUEUED: Final = 10_000
DEFAULT_DEADLINE_S: Final = 10.0
REPLAY_HEADER: Final = "clickwire-replay"


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay: ``event_ids`` (None for all) within [since_ms, until_ms) of outbox time."""

    event_ids: frozenset[str] | None
    since_ms: int | None
    until_ms: int | None


class ReplayQueued(BaseModel):
    """What a replay queued; when ``complete`` is false, replay again with ``since = resume_from``."""

    queued: int = Field(description="Deliveries put back on the outbox, in their original order")
    scanned: int = Field(description="Outbox records read")
    complete: bool = Field(description="False when the scan stopped at its deadline or cap")
    missing_event_ids: list[str] = Field(description="Listed ids not found for this subscription")
    resume_from: datetime | None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """How a replay went: ``queued`` records produced; ``resume_from_ms`` set when stopped early."""

    queued: int
    scanned: int
    complete: bool
    missing: tuple[str, ...]
    resume_from_ms: int | None

    def public(self) -> dict[str, Any]:
        """Return the API's JSON view of the result."""
        return {
            "queued": self.queued,
            "scanned": self.scanned,
            "complete": self.complete,
            "missing_event_ids": list(self.missing),
            "resume_from": None if self.resume_from_ms is None else rfc3339_ms(self.resume_from_ms),
        }


def replay_request(body: ReplayBody) -> ReplayRequest:
    """Return the scan a validated replay body asks for (times as ms since the epoch, never before it)."""
    # No record is older than the epoch, and Kafka refuses negative times in offset lookups.
    return ReplayRequest(
        event_ids=None if body.event_ids is None else frozenset(body.event_ids),
        since_ms=None if body.since is None else max(0, int(body.since.timestamp() * 1000)),
        until_ms=None if body.until is None else max(0, int(body.until.timestamp() * 1000)),
    )


def outbox_partition(subscription_id: str, partitions: Sequence[int]) -> int:
    """Return the outbox partition holding a subscription: the producers' default murmur2 partitioner."""
    ordered = sorted(partitions)
    partition: int = DefaultPartitioner()(subscription_id.encode(), ordered, ordered)
    return partition


async def _bounds(consumer: AIOKafkaConsumer, tp: TopicPartition, req: ReplayRequest) -> tuple[int, int]:
    begin = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    start, stop = begin, end
    if req.since_ms is not None:
        found = (await consumer.offsets_for_times({tp: req.since_ms}))[tp]
        start = end if found is None else max(begin, found.offset)
    if req.until_ms is not None:
        found = (await consumer.offsets_for_times({tp: req.until_ms}))[tp]
        stop = end if found is None else min(end, found.offset)
    return start, stop


async def replay(common: CommonSettings, producer: AIOKafkaProducer, subscription_id: str,
                 req: ReplayRequest, *, deadline_s: float = DEFAULT_DEADLINE_S,
                 max_queued: int = MAX_QUEUED) -> ReplayResult:
    """Re-queue the subscription's matching outbox records in order; return how many were queued."""
    topic = name(Topic.WEBHOOK_OUTBOX, common.topic_prefix)
    codec = codec_for(Topic.WEBHOOK_OUTBOX, common.schema_registry_url)
    deadline = time.monotonic() + deadline_s
    consumer = AIOKafkaConsumer(
        bootstrap_servers=common.bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", fetch_max_wait_ms=FETCH_MAX_WAIT_MS, auto_offset_reset="earliest",
    )
    await consumer.start()
    sends: list[asyncio.Future[Any]] = []
    wanted = set(req.event_ids) if req.event_ids is not None else None
    seen: set[str] = set()
    scanned = 0
    resume_from: int | None = None
    key = subscription_id.encode()
    try:
        # The producer's lookup fetches metadata when it has none; the fresh consumer's would not.
        partitions = await producer.partitions_for(topic)
        if not partitions:
            raise Problem(503, "unavailable", f"topic {topic} is not available")
        tp = TopicPartition(topic, outbox_partition(subscription_id, list(partitions)))
        consumer.assign([tp])
        start, stop = await _bounds(consumer, tp, req)
        position = start
        if start < stop:
            consumer.seek(tp, start)
        while position < stop and resume_from is None:
            if time.monotonic() >= deadline:
                resume_from = await _timestamp_at(consumer, tp, position)
                break
            remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            batch = await consumer.getmany(tp, timeout_ms=min(500, max(1, remaining_ms)), max_records=500)
            for record in batch.get(tp, []):
                if record.offset >= stop:
                    position = stop
                    break
                position = record.offset + 1
                scanned += 1
                if record.key != key or record.value is None:
                    continue
                delivery = codec.decode(record.value)
                event_id = delivery["event_id"]
                if delivery["subscription_id"] != subscription_id or event_id in seen:
                    continue  # a record replayed before is on the topic twice: send it once
                if wanted is not None and event_id not in wanted:
                    continue
                if len(sends) >= max_queued:
                    # Resume at the next record to send, not at the last sent: nothing goes out twice
                    # unless records share a millisecond.
                    resume_from = int(record.timestamp)
                    break
                seen.add(event_id)
                copy = {**delivery, "attempt": 0, "not_before_ms": 0}
                sends.append(await producer.send(topic, codec.encode(copy), key=key, partition=tp.partition,
                                                 headers=[(REPLAY_HEADER, b"1")]))
            if wanted is not None and wanted <= seen:
                break  # every listed id found: no need to read the rest of the partition
        # Acknowledged by the broker before we say "queued".
        await asyncio.gather(*sends)
    finally:
        await consumer.stop()
    missing = tuple(sorted(wanted - seen)) if wanted is not None else ()
    complete = resume_from is None
    return ReplayResult(queued=len(sends), scanned=scanned, complete=complete,
                        missing=missing if complete else (), resume_from_ms=resume_from)


async def _timestamp_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> int:
    """Return the timestamp of the record at ``offset`` (where to resume), or now if it cannot be read."""
    consumer.seek(tp, offset)
    batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
    records = batch.get(tp, [])
    return int(records[0].timestamp) if records else int(time.time() * 1000)
