"""The retry reader's bookkeeping: which parked records a lane takes, seeks back, commit points."""

from __future__ import annotations

from typing import Any

from clickwire.codec import codec_for
from clickwire.topics import Topic
from services.dispatcher.lanes import Lane
from services.dispatcher.parking import Parking, RetryPartition


def parking(lane_max: int = 2) -> Parking:
    """A Parking with no producer (only the reader side is exercised)."""
    p = Parking(None, "retry", codec_for(Topic.WEBHOOK_RETRY), lane_max, lambda _: None, lambda _: None)
    p.partitions[0] = RetryPartition(0, position=0, recovery_end=0)
    return p


def parked(rp: RetryPartition, **kwargs: Any) -> Lane:
    """A lane parked on ``rp``."""
    lane = Lane("s", 0, parked=True, **kwargs)
    rp.lanes.add(lane)
    return lane


def test_a_full_lane_skips_and_seeks_back_to_its_cursor_when_drained() -> None:
    """A lane whose window is full skips records; ready again, the reader is sent back to its cursor."""
    p = parking(lane_max=1)
    rp = p.partitions[0]
    lane = parked(rp)
    assert p.take(lane, 3, now=0)
    assert lane.retry_next == 4
    rp.pos = rp.high = 6
    lane.queue.append(object())  # type: ignore[arg-type]  # window full
    assert not p.take(lane, 5, now=0)
    assert lane.skipped
    lane.queue.clear()
    p.ready_again(lane)
    assert rp.seek_to == 4
    assert lane.awaiting_seek
    assert not p.take(lane, 6, now=0)  # nothing is taken past the gap until the seek happened
    rp.seeked(4)
    assert not lane.awaiting_seek
    assert rp.pos == 4
    assert p.take(lane, 5, now=0)
    assert lane.retry_next == 6


def test_a_waiting_lane_takes_nothing_until_due() -> None:
    """Records of a lane whose head is not due yet are skipped, then re-read when it is due."""
    p = parking()
    rp = p.partitions[0]
    lane = parked(rp, resume_at=50.0, retry_next=2)
    rp.pos = rp.high = 3
    assert not p.take(lane, 2, now=10)
    assert lane.skipped
    p.ready_again(lane)
    assert rp.seek_to == 2


def test_records_from_an_earlier_parking_are_ignored() -> None:
    """After unparking and parking again, old records met after a seek are not delivered twice."""
    p = parking()
    rp = p.partitions[0]
    lane = parked(rp, parked_from=10)
    assert not p.take(lane, 4, now=0)
    assert lane.retry_next is None


def test_commit_point_is_the_lowest_unfinished_parked_record() -> None:
    """The retry partition commits below the oldest unfinished record of any parked lane."""
    rp = RetryPartition(0, position=0, recovery_end=5)
    rp.high = 20
    assert rp.recovering is False
    parked(rp, retry_next=12)
    other = Lane("t", 0, parked=True, retry_next=8)
    rp.lanes.add(other)
    assert rp.committable() == 8
    rp.lanes.clear()
    assert rp.committable() == 20
