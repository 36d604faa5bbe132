"""Parking a lane's backlog in the retry topic, and reading it back in order.

Why: a subscription that is down (or slower than its traffic) must not hold its backlog in memory,
and must not hold back the outbox commit of the partition it shares with healthy subscriptions.

How (docs/delivery.md has the full argument):
- ``park`` moves everything a lane holds to ``webhooks.retry`` (same partition number as the outbox
  partition, so one deliverer owns both), head first, with its attempt count and ``not_before_ms``;
  from then on every new outbox record of that subscription is forwarded behind it. An outbox offset
  is finished when its copy is acknowledged by the broker.
- The retry partition is read sequentially by one reader shared by every parked lane on it. A lane
  takes a record only when it is accepting (due, window not full); otherwise the record is skipped,
  and when the lane becomes ready again the reader seeks back to the lane's cursor ``retry_next``.
  So memory is ``lane_max`` records per lane whatever the backlog, and order is the retry log's.
- The retry partition's commit point is the lowest unfinished offset of any parked lane.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from clickwire.codec import AvroCodec
from services.dispatcher.lanes import Item, Lane

log = structlog.get_logger(__name__)


class RetryPartition:
    """The retry reader's state for one partition of the retry topic."""

    def __init__(self, partition: int, position: int, recovery_end: int) -> None:
        self.partition = partition
        self.pos = position  # next offset the reader will return
        self.high = position  # every offset below has been read at least once
        self.recovery_end = recovery_end  # read up to here before the outbox partition may flow
        self.lanes: set[Lane] = set()
        self.seek_to: int | None = None

    @property
    def recovering(self) -> bool:
        """True until the reader has seen every record that was parked before this process took over."""
        return self.high < self.recovery_end

    def request_seek(self, lane: Lane) -> None:
        """Make the reader go back to ``lane.retry_next`` before the lane takes anything more."""
        lane.skipped = False
        if lane.retry_next is None or lane.retry_next >= self.pos:
            return  # the reader has not got there yet: it will find the lane's records in order
        lane.awaiting_seek = True
        self.seek_to = lane.retry_next if self.seek_to is None else min(self.seek_to, lane.retry_next)

    def seeked(self, target: int) -> None:
        """Record that the reader was moved to ``target``."""
        self.pos = target
        self.seek_to = None
        for lane in self.lanes:
            if lane.awaiting_seek and (lane.retry_next is None or lane.retry_next >= target):
                lane.awaiting_seek = lane.skipped = False

    def committable(self) -> int:
        """Return the commit point: below it every record is delivered, dead or dropped."""
        low = self.high
        for lane in self.lanes:
            lane_low = lane.retry_low()
            if lane_low is not None and lane_low < low:
                low = lane_low
        return low


class Parking:
    """Forwards parked lanes' records to the retry topic and hands them back from the reader."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, codec: AvroCodec, lane_max: int,
                 on_forwarded: Callable[[Item], None], on_error: Callable[[BaseException], None]) -> None:
        self._producer = producer
        self._topic = topic
        self._codec = codec
        self._lane_max = lane_max
        self._on_forwarded = on_forwarded
        self._on_error = on_error
        self.partitions: dict[int, RetryPartition] = {}
        self.forwarded = 0

    async def park(self, lane: Lane, items: list[Item], resume_at: float = 0.0) -> None:
        """Move ``items`` (the lane's whole backlog, oldest first) to the retry topic and park the lane."""
        lane.parked = True
        rp = self.partitions.get(lane.partition)
        if rp is not None:
            rp.lanes.add(lane)
            # Records parked from now on land at or after the log end, which is at least what was read.
            lane.parked_from = rp.high
        lane.resume_at = resume_at
        async with lane.send_lock:
            for item in items:
                if item.origin == "retry":
                    # A parked lane never re-parks records it read from the retry topic (they would land
                    # behind newer ones); the caller rewinds its cursor instead.
                    raise AssertionError("park() is for outbox records only")
                await self._send(lane, item, self._codec.encode(item.delivery) if item.dirty else item.raw)

    async def forward(self, lane: Lane, item: Item) -> None:
        """Append one outbox record of a parked lane to the retry topic, behind its backlog."""
        async with lane.send_lock:
            await self._send(lane, item, item.raw)

    async def _send(self, lane: Lane, item: Item, raw: bytes) -> None:
        lane.forwards_pending += 1
        fut = await self._producer.send(self._topic, raw, key=lane.sub_id.encode(), partition=lane.partition)

        def done(f: Any) -> None:
            lane.forwards_pending -= 1
            if f.cancelled() or f.exception() is not None:
                self._on_error(f.exception() or RuntimeError("retry send cancelled"))
                return
            meta: RecordMetadata = f.result()
            lane.retry_last = max(lane.retry_last, meta.offset)
            if lane.retry_next is None:
                lane.retry_next = meta.offset
            self.forwarded += 1
            self._on_forwarded(item)

        fut.add_done_callback(done)

    def take(self, lane: Lane, offset: int, now: float) -> bool:
        """Decide whether the reader hands the retry record at ``offset`` to ``lane`` (parked) now."""
        if offset < lane.parked_from:
            return False  # delivered during an earlier parking of this lane, met again after a seek
        lane.retry_last = max(lane.retry_last, offset)
        if lane.retry_next is None:
            lane.retry_next = offset
        if offset < lane.retry_next:
            return False  # taken before a seek back
        if lane.awaiting_seek:
            return False  # the seek back to retry_next will bring the reader here again
        if not lane.accepting(now, self._lane_max):
            lane.skipped = True
            return False
        lane.retry_next = offset + 1
        return True

    def ready_again(self, lane: Lane) -> None:
        """Call when a parked lane may take records again (due, or its window drained): seek if needed."""
        rp = self.partitions.get(lane.partition)
        if rp is not None and lane.parked and (lane.skipped or (lane.retry_next or 0) < rp.pos):
            rp.request_seek(lane)

    def unpark_if_drained(self, lane: Lane) -> bool:
        """Leave parking once every parked record was delivered; new outbox records then go straight in."""
        rp = self.partitions.get(lane.partition)
        if rp is None or rp.recovering or not lane.drained():
            return False
        lane.parked = False
        lane.retry_next = None
        lane.retry_last = -1
        lane.skipped = lane.awaiting_seek = False
        rp.lanes.discard(lane)
        return True

    def stats(self) -> dict[str, int]:
        """Parked lanes and forwarded records, for health and metrics."""
        return {"parked_lanes": sum(len(rp.lanes) for rp in self.partitions.values()), "forwarded": self.forwarded}


def now_ms() -> int:
    """Wall-clock ms (not_before_ms is wall-clock, shared between processes)."""
    return int(time.time() * 1000)
