"""Per-link click counters: human and bot clicks per link, published to the compacted links.stats.

The counts of the links on a worker's partitions live in its memory (:class:`LinkCounts`); the
compacted links.stats topic holds the latest totals and is where a worker starts from: at each
partition assignment it reads links.stats to its end (:func:`read_totals`) and adds to those.
Changed links are published at most once per CLICKWIRE_ENRICHER_STATS_INTERVAL (app.py), and a
click's offset is acknowledged only after a publish that includes it, so a committed click is
always counted in links.stats. On revocation the worker publishes before Faust commits, so the
next owner starts from its totals.

At-least-once consequence: clicks processed after the last commit are processed again after a
crash and counted again if their count was already published. Counts can run slightly high after a
crash, never low. The redirector uses them only for the approximate max_clicks cap, and only human
clicks count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from clickwire.codec import codec_for
from clickwire.follow import TopicTable
from clickwire.settings import CommonSettings
from clickwire.topics import Topic


def link_stats_record(link_id: str, counts: tuple[int, int] | list[int], now_ms: int) -> dict[str, Any]:
    """The link_stats.avsc record for a link's [human, bot] counts."""
    return {"link_id": link_id, "human_clicks": int(counts[0]), "bot_clicks": int(counts[1]),
            "updated_ms": now_ms}


async def read_totals(common: CommonSettings, timeout_s: float = 30.0) -> dict[str, tuple[int, int]]:
    """The latest (human, bot) totals of every link on links.stats, read to its current end."""
    codec = codec_for(Topic.LINK_STATS, common.schema_registry_url)
    table: TopicTable[dict[str, Any]] = TopicTable(common, Topic.LINK_STATS, codec.decode)
    await table.start()
    try:
        await table.wait_loaded(timeout_s)
        return {key: (int(v["human_clicks"]), int(v["bot_clicks"])) for key, v in table.items()}
    finally:
        await table.stop()


class LinkCounts:
    """[human, bot] clicks per link of the assigned partitions, on top of links.stats totals."""

    def __init__(self) -> None:
        self._totals: Mapping[str, tuple[int, int]] = {}
        self._counts: dict[str, list[int]] = {}
        self._links_of: dict[int, set[str]] = {}
        self.dirty: set[str] = set()

    def __len__(self) -> int:
        return len(self._counts)

    def rebase(self, totals: Mapping[str, tuple[int, int]]) -> None:
        """Start every link not counted here yet from `totals` (links.stats as of an assignment)."""
        self._totals = totals

    def add(self, partition: int, link_id: str, is_bot: bool) -> None:
        """Count one enriched click of a link read from `partition`."""
        counts = self._counts.get(link_id)
        if counts is None:
            base = self._totals.get(link_id, (0, 0))
            counts = self._counts[link_id] = [base[0], base[1]]
            self._links_of.setdefault(partition, set()).add(link_id)
        counts[1 if is_bot else 0] += 1
        self.dirty.add(link_id)

    def get(self, link_id: str) -> tuple[int, int] | None:
        """The (human, bot) count of a link counted here, None otherwise."""
        counts = self._counts.get(link_id)
        return None if counts is None else (counts[0], counts[1])

    def take_dirty(self) -> list[tuple[str, tuple[int, int]]]:
        """The links changed since the last call, with their counts; clears the changed set."""
        dirty, self.dirty = self.dirty, set()
        return [(link_id, (c[0], c[1])) for link_id in dirty if (c := self._counts.get(link_id)) is not None]

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the links of revoked partitions (publish them first)."""
        for partition in partitions:
            for link_id in self._links_of.pop(partition, ()):
                self._counts.pop(link_id, None)
                self.dirty.discard(link_id)
