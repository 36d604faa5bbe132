"""Velocity: clicks per (IP, link) per minute, the input of the bot detector's velocity signal.

The stream keeps the counts in a tumbling-window Faust table (see app.py), keyed by
:func:`velocity_key`; `clickwire enrich` uses :class:`LocalVelocity`, the same count in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def velocity_key(raw: Mapping[str, Any]) -> str:
    """The table key of a raw click: its client IP and link id."""
    return f"{raw.get('client_ip') or ''}|{raw.get('link_id') or ''}"


class LocalVelocity:
    """Tumbling-window click counts in one process (no changelog): for `clickwire enrich`."""

    def __init__(self, window_s: int = 60) -> None:
        self._window_ms = window_s * 1000
        self._counts: dict[tuple[str, int], int] = {}
        self._newest_window = 0

    def hit(self, raw: Mapping[str, Any]) -> int:
        """Count one click and return the clicks of its (IP, link) in its window, itself included."""
        window = int(raw["ts_ms"]) // self._window_ms
        if window > self._newest_window:
            # Windows older than the previous one can no longer be hit by in-order input: drop them.
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window - 1}
            self._newest_window = window
        key = (velocity_key(raw), window)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count
