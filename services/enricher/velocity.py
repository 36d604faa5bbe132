"""Velocity: clicks per (IP, link) per minute, the input of the bot detector's velocity signal.

Kept in process memory, one tumbling-window count per assigned partition of clicks.raw
(:class:`PartitionVelocity`, used by app.py). Clicks are keyed by link id, so every click of an
(IP, link) pair reaches the partition, and the worker, that counts it: the count is exact while
partitions stay put. Trade-off, chosen over a changelogged Faust table that published one record
per click and capped the enricher at ~2k clicks/s: a restart or a rebalance starts the moved
partitions' current window from zero, so at most one window (60 s) of velocity signal is lost
for them. `clickwire enrich` uses :class:`LocalVelocity`, the same count for one input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def velocity_key(raw: Mapping[str, Any]) -> str:
    """The count key of a raw click: its client IP and link id."""
    return f"{raw.get('client_ip') or ''}|{raw.get('link_id') or ''}"


class LocalVelocity:
    """Tumbling-window click counts in one process (no changelog)."""

    def __init__(self, window_s: int = 60) -> None:
        self._window_ms = window_s * 1000
        self._counts: dict[tuple[str, int], int] = {}
        self._newest_window = 0

    def __len__(self) -> int:
        return len(self._counts)

    def hit(self, raw: Mapping[str, Any]) -> int:
        """Count one click and return the clicks of its (IP, link) in its window, itself included."""
        return self.count(velocity_key(raw), int(raw["ts_ms"]))

    def count(self, key: str, ts_ms: int) -> int:
        """hit() for a click given as its velocity_key() and timestamp."""
        window = ts_ms // self._window_ms
        if window > self._newest_window:
            # Windows older than the previous one can no longer be hit by in-order input: drop them.
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window - 1}
            self._newest_window = window
        key_window = (key, window)
        count = self._counts.get(key_window, 0) + 1
        self._counts[key_window] = count
        return count


class PartitionVelocity:
    """A LocalVelocity per partition of clicks.raw, forgotten when the partition is revoked."""

    def __init__(self, window_s: int = 60) -> None:
        self._window_s = window_s
        self._by_partition: dict[int, LocalVelocity] = {}

    def of(self, partition: int) -> LocalVelocity:
        """The counts of one partition (created empty on first use)."""
        counts = self._by_partition.get(partition)
        if counts is None:
            counts = self._by_partition[partition] = LocalVelocity(self._window_s)
        return counts

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget revoked partitions: their new owner counts from its own start."""
        for partition in partitions:
            self._by_partition.pop(partition, None)

    def partitions(self) -> set[int]:
        """Partitions with counts."""
        return set(self._by_partition)
