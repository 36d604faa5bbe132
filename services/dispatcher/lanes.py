"""Per-subscription FIFO lanes and per-partition offset tracking for the deliverer.

A :class:`Lane` holds one subscription's deliveries in outbox order; the deliverer runs at most one
request (or one batch) per lane at a time, and lanes run concurrently, so a slow endpoint only ever
delays itself. An :class:`OffsetTracker` knows, for one outbox partition, which offsets are still
unfinished: the commit point is the oldest of them, so a crash re-reads everything not yet done.

Parking (see parking.py and docs/delivery.md) moves a lane's backlog to the retry topic; the lane
then keeps only a cursor into that topic (``retry_next``) and a window of at most ``lane_max``
records in memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

Origin = Literal["outbox", "retry"]


@dataclass(slots=True, eq=False)
class Item:
    """One delivery record in a lane, with where it was read from."""

    delivery: dict[str, Any]
    raw: bytes
    origin: Origin
    partition: int
    offset: int
    received_at: float
    tracker: OffsetTracker | None = None  # the outbox partition's tracker when it was read (None: retry)
    dirty: bool = False  # attempt/not_before changed since it was read: re-encode before parking

    def retried(self, attempts: int, not_before_ms: int) -> None:
        """Record a failed attempt and when the next one is due."""
        self.delivery["attempt"] = attempts
        self.delivery["not_before_ms"] = not_before_ms
        self.dirty = True

    @property
    def event_id(self) -> str:
        """The event id, sent as webhook-id."""
        return str(self.delivery["event_id"])

    @property
    def attempts(self) -> int:
        """Attempts already made."""
        return int(self.delivery.get("attempt") or 0)

    @property
    def not_before_ms(self) -> int:
        """Do not send before this wall-clock time (ms)."""
        return int(self.delivery.get("not_before_ms") or 0)


class OffsetTracker:
    """Offsets of one partition in arrival order; the commit point is the oldest unfinished one."""

    __slots__ = ("_done", "_next", "_pending")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, offset: int) -> None:
        """Record that ``offset`` was read and is not finished yet (offsets arrive increasing)."""
        self._pending.append(offset)
        self._next = offset + 1

    def done(self, offset: int) -> None:
        """Mark ``offset`` finished; the commit point moves past every finished prefix."""
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            done = self._done
            while pending and pending[0] in done:
                done.discard(pending.popleft())
        else:
            self._done.add(offset)

    def committable(self) -> int | None:
        """Return the offset to commit (everything below it is finished), None before any record."""
        return self._pending[0] if self._pending else self._next


@dataclass(eq=False)
class Lane:
    """One subscription's deliveries, in order, and its parking state."""

    sub_id: str
    partition: int
    queue: deque[Item] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # Bumped whenever the queue is taken away (parked); an attempt in flight compares it afterwards.
    generation: int = 0
    in_flight: list[Item] | None = None
    batch: list[Item] | None = None  # a failed batch keeps its composition (and so its webhook-id)
    # Parking: the lane's records live in the retry topic from retry_next on.
    parked: bool = False
    retry_next: int | None = None
    retry_last: int = -1
    parked_from: int = 0
    forwards_pending: int = 0
    acking: set[int] = field(default_factory=set)
    resume_at: float = 0.0
    skipped: bool = False
    awaiting_seek: bool = False
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Outcomes of attempts whose record was parked while in flight: event id -> (attempts, not_before_ms), or
    # None when the attempt succeeded and the parked copy must not be sent again.
    overrides: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    failing_since: float | None = None
    # (subscription record, valid until ms, its live secrets): signing reuses them while the record is current.
    signing: tuple[dict[str, Any], int, list[str]] | None = None
    disabled_reason: str | None = None
    unknown_since: float | None = None

    def push(self, item: Item) -> None:
        """Append a delivery and wake the lane's runner."""
        self.queue.append(item)
        self.wake.set()

    def take_all(self) -> list[Item]:
        """Remove and return everything queued (and a batch in flight is detached: generation bumps)."""
        items = list(self.queue)
        self.queue.clear()
        self.batch = None
        self.generation += 1
        return items

    def accepting(self, now: float, lane_max: int) -> bool:
        """Whether the retry reader may hand this parked lane its next record now."""
        return (
            self.parked
            and not self.skipped
            and not self.awaiting_seek
            and now >= self.resume_at
            and len(self.queue) < lane_max
        )

    def retry_low(self) -> int | None:
        """The lowest retry offset of this lane not finished yet, None when none is known."""
        candidates = [o for o in self.acking]
        for item in self.in_flight or ():
            if item.origin == "retry":
                candidates.append(item.offset)
        if self.queue and self.queue[0].origin == "retry":
            candidates.append(self.queue[0].offset)
        if self.retry_next is not None:
            candidates.append(self.retry_next)
        return min(candidates) if candidates else None

    def drained(self) -> bool:
        """Whether every parked record of this lane has been delivered, so it may leave parking."""
        return (
            self.parked
            and not self.queue
            and self.in_flight is None
            and self.forwards_pending == 0
            and not self.acking
            and self.retry_next is not None
            and self.retry_next > self.retry_last
        )
