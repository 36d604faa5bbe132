"""Offset tracking and lane state: the pure parts of the deliverer."""

from __future__ import annotations

from services.dispatcher.lanes import Item, Lane, OffsetTracker


def item(offset: int, origin: str = "outbox") -> Item:
    """A minimal delivery item."""
    return Item({"event_id": f"e{offset}", "attempt": 0, "not_before_ms": 0}, b"", origin, 0, offset, 0.0)  # type: ignore[arg-type]


def test_commit_point_is_the_oldest_unfinished_offset() -> None:
    """Finishing out of order moves the commit point only past a finished prefix."""
    tracker = OffsetTracker()
    assert tracker.committable() is None
    for offset in (10, 11, 12, 13):
        tracker.add(offset)
    tracker.done(12)
    tracker.done(11)
    assert tracker.committable() == 10
    tracker.done(10)
    assert tracker.committable() == 13
    tracker.done(13)
    assert tracker.committable() == 14
    assert len(tracker) == 0


def test_take_all_detaches_the_queue_and_bumps_the_generation() -> None:
    """Parking takes every queued item and lets an attempt in flight notice it."""
    lane = Lane("s", 0)
    lane.push(item(1))
    lane.push(item(2))
    assert [i.offset for i in lane.take_all()] == [1, 2]
    assert not lane.queue
    assert lane.generation == 1


def test_a_parked_lane_accepts_only_when_due_and_not_full() -> None:
    """The retry reader hands records to a parked lane only when it is due and its window has room."""
    lane = Lane("s", 0, parked=True, resume_at=100.0)
    assert not lane.accepting(99.0, 2)
    assert lane.accepting(100.0, 2)
    lane.push(item(5, "retry"))
    lane.push(item(6, "retry"))
    assert not lane.accepting(100.0, 2)
    assert not Lane("u", 0).accepting(100.0, 2)  # not parked: records come from the outbox


def test_retry_low_and_drained_follow_the_cursor() -> None:
    """A parked lane's lowest unfinished retry offset is its queue head, else its cursor."""
    lane = Lane("s", 0, parked=True, retry_next=7, retry_last=9)
    assert lane.retry_low() == 7
    assert not lane.drained()
    lane.push(item(7, "retry"))
    lane.retry_next = 8
    assert lane.retry_low() == 7
    lane.queue.clear()
    lane.retry_next = 10
    assert lane.retry_low() == 10
    assert lane.drained()
    lane.forwards_pending = 1
    assert not lane.drained()
