"""Per-link click counters: human and bot clicks per link, published to the compacted links.stats.

The counts live in a Faust table with a changelog (app.py), so a restarted or rebalanced worker
recovers them. At-least-once consequence: a click processed after the last offset commit is
processed again after a crash, and counted again; the changelog write of its first pass may
already be on the broker. Counts can therefore run slightly high after a crash, never low. The
redirector uses them only for the approximate max_clicks cap, and only human clicks count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def link_stats_record(link_id: str, counts: tuple[int, int] | list[int], now_ms: int) -> dict[str, Any]:
    """The link_stats.avsc record for a link's [human, bot] counts."""
    return {"link_id": link_id, "human_clicks": int(counts[0]), "bot_clicks": int(counts[1]),
            "updated_ms": now_ms}


@dataclass
class BatchCounts:
    """Human/bot clicks per link within one batch, applied to the table once per link."""

    deltas: dict[str, list[int]] = field(default_factory=dict)

    def add(self, link_id: str, is_bot: bool) -> None:
        """Count one enriched click."""
        counts = self.deltas.get(link_id)
        if counts is None:
            counts = self.deltas[link_id] = [0, 0]
        counts[1 if is_bot else 0] += 1

    @staticmethod
    def merged(current: list[int] | None, delta: list[int]) -> list[int]:
        """The table value after adding a batch's delta."""
        base = current or [0, 0]
        return [int(base[0]) + delta[0], int(base[1]) + delta[1]]
