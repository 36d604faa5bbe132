"""Follow the compacted links topic into a LinkTable, and links.stats into human-click counts.

Both are :class:`clickwire.follow.TopicTable` followers (every partition from the beginning, then
live, fetch wait 100 ms), so a create, update or delete made through the API reaches every
redirector in well under a second.

The links follower does not keep the decoded :class:`Link` objects: the packed LinkTable is the
only copy (that is how a link costs <= 250 bytes), so it overrides how a record is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from clickwire.codec import codec_for
from clickwire.follow import TopicTable
from clickwire.links import Link
from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from services.redirector.table import LinkTable

log = structlog.get_logger(__name__)


class _LinkStream(TopicTable[Link]):
    """A TopicTable that applies links to a LinkTable instead of keeping them in a dict."""

    def __init__(self, common: CommonSettings, table: LinkTable, domains: tuple[str, ...]) -> None:
        codec = codec_for(Topic.LINKS, common.schema_registry_url)
        super().__init__(common, Topic.LINKS, lambda raw: Link.from_avro(codec.decode(raw)))
        self._table = table
        self._domains = frozenset(domains)
        self.domain_links: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._table)

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None, topic: str, partition: int,
               offset: int) -> None:
        if raw_key is None:
            return
        try:
            domain, _, code = raw_key.decode().partition("/")
            link = None if raw_value is None else self._decode(raw_value)
        except Exception as exc:  # a bad record must not stop the redirector from following
            self.decode_errors += 1
            if self._bad.allow(topic):
                log.warning("undecodable link skipped", topic=topic, partition=partition, offset=offset,
                            error=f"{type(exc).__name__}: {exc}")
            return
        if link is None:
            self._remove(domain, code)
        elif self._domains and link.domain not in self._domains:
            # Not served here; it may have moved away from one of our domains.
            self._remove(link.domain, link.code)
        else:
            if (link.domain, link.code) != (domain, code):
                self._remove(domain, code)
            if (link.domain, link.code) not in self._table:
                self.domain_links[link.domain] = self.domain_links.get(link.domain, 0) + 1
            self._table.upsert(link)
        self.records_applied += 1
        self.last_applied_at = time.time()

    def _remove(self, domain: str, code: str) -> None:
        if self._table.remove(domain, code):
            left = self.domain_links[domain] - 1
            if left:
                self.domain_links[domain] = left
            else:
                del self.domain_links[domain]


class LinkFeeds:
    """The redirector's view of links and of their human-click counts, kept current live."""

    def __init__(self, common: CommonSettings, domains: tuple[str, ...] = ()) -> None:
        self.table = LinkTable()
        self.counts: dict[str, int] = {}
        self._links = _LinkStream(common, self.table, domains)
        stats_codec = codec_for(Topic.LINK_STATS, common.schema_registry_url)
        self._stats: TopicTable[int] = TopicTable(
            common, Topic.LINK_STATS, lambda raw: int(stats_codec.decode(raw)["human_clicks"]),
            on_change=self._count_changed,
        )

    def _count_changed(self, key: str, old: int | None, new: int | None) -> None:
        if new is None:
            self.counts.pop(key, None)
        else:
            self.counts[key] = new

    def serves(self, domain: str) -> bool:
        """True when at least one link lives on `domain`."""
        return domain in self._links.domain_links

    async def start(self, timeout_s: float = 60.0) -> None:
        """Load both topics up to their current end, then keep following them."""
        await self._links.start()
        await self._stats.start()
        await self._links.wait_loaded(timeout_s)
        await self._stats.wait_loaded(timeout_s)
        log.info("links loaded", links=len(self.table), counts=len(self.counts))

    async def stop(self) -> None:
        """Stop following (bounded: this runs at shutdown, possibly with the broker away)."""
        for follower in (self._links, self._stats):
            # aiokafka's consumer.stop() re-raises the CancelledError of a fetch it was retrying
            # against an unreachable broker; at shutdown that must not turn into exit status 1.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(follower.stop(), 5)

    def status(self) -> dict[str, Any]:
        """Numbers for /_/health."""
        return {
            "links": len(self.table),
            "links_loaded": self._links.loaded,
            "link_records_applied": self._links.records_applied,
            "link_decode_errors": self._links.decode_errors,
            "counts": len(self.counts),
        }
