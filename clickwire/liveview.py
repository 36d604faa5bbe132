"""The live terminal view of the demo: what is flowing through clickwire right now.

It taps ``clicks.enriched`` from its end (no consumer group, nothing committed), reads the demo
receiver's counters and the consumer groups' lag, and renders a rich layout twice a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from clickwire.codec import codec_for
from clickwire.kafka import BULK_FETCH, stop_consumer_task, topic_partitions
from clickwire.receiver import ReceiverStats
from clickwire.settings import CommonSettings
from clickwire.simulate import SimStats
from clickwire.topics import Topic, name

GROUPS = ("clickwire-enricher", "clickwire-sink", "clickwire-router", "clickwire-deliverer")


class ClickTap:
    """Counts enriched clicks as they appear on the topic."""

    def __init__(self, common: CommonSettings) -> None:
        self._common = common
        self._codec = codec_for(Topic.CLICKS_ENRICHED, common.schema_registry_url)
        self.arrivals: deque[float] = deque(maxlen=100_000)
        self.total = 0
        self.humans = 0
        self.bot_kinds: Counter[str] = Counter()
        self.links: Counter[str] = Counter()
        self.countries: Counter[str] = Counter()
        self.enrich_ms: deque[float] = deque(maxlen=5000)
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Start tapping from the topic's current end."""
        topic = name(Topic.CLICKS_ENRICHED, self._common.topic_prefix)
        consumer = AIOKafkaConsumer(bootstrap_servers=self._common.bootstrap, group_id=None,
                                    auto_offset_reset="latest", **BULK_FETCH)
        await consumer.start()
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(Exception):  # a bad record is the enricher's business
                        self._count(self._codec.decode(record.value), now)

    def _count(self, click: dict[str, Any], now: float) -> None:
        self.total += 1
        self.arrivals.append(now)
        if click["is_bot"]:
            self.bot_kinds[click["bot_kind"]] += 1
        else:
            self.humans += 1
        self.links[f"{click['domain']}/{click['code']}"] += 1
        self.countries[click["country"] or "??"] += 1
        self.enrich_ms.append(click["enriched_ms"] - click["ts_ms"])

    def rate(self, window_s: float = 5.0) -> float:
        """Enriched clicks per second over the last window."""
        now = time.monotonic()
        return sum(1 for t in self.arrivals if now - t <= window_s) / window_s

    async def stop(self) -> None:
        """Stop tapping."""
        await stop_consumer_task(self._task, self._consumer)


async def consumer_lag(common: CommonSettings, groups: tuple[str, ...] = GROUPS) -> dict[str, int | None]:
    """Records not yet committed per consumer group (None when the group has no offsets yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=common.bootstrap, request_timeout_ms=3000)
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap, group_id=None)
    lags: dict[str, int | None] = {}
    try:
        await admin.start()
        await consumer.start()
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            if not committed:
                lags[group] = None
                continue
            ends = await consumer.end_offsets(list(committed))
            lags[group] = sum(max(0, ends[tp] - meta.offset) for tp, meta in committed.items() if meta.offset >= 0)
    finally:
        await admin.close()
        await consumer.stop()
    return lags


def _pct(values: deque[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]:.0f} ms"


def render(tap: ClickTap, receiver: ReceiverStats, sim: SimStats, lag: dict[str, int | None],
           started: float) -> Group:
    """The whole view as one rich renderable."""
    bots = sum(tap.bot_kinds.values())
    head = Table.grid(padding=(0, 3))
    for _ in range(4):
        head.add_column()
    head.add_row(f"[b]clicks/s[/] {tap.rate():.0f}", f"[b]enriched[/] {tap.total}",
                 f"[b]deliveries/s[/] {receiver.rate():.0f}", f"[b]delivered[/] {receiver.accepted}")
    head.add_row(f"[b]human[/] {tap.humans / max(1, tap.total):.0%}", f"[b]bot[/] {bots / max(1, tap.total):.0%}",
                 f"[b]click→webhook p50[/] {_pct(receiver.latencies_ms, 50)}",
                 f"[b]p99[/] {_pct(receiver.latencies_ms, 99)}")
    head.add_row(f"[b]sent[/] {sim.sent}", f"[b]redirected[/] {sim.redirected}",
                 f"[b]5xx[/] {sim.server_errors}", f"[b]bad signatures[/] {receiver.bad_signatures}  "
                 f"[b]dupes dropped[/] {receiver.duplicates}  [b]out of order[/] {receiver.out_of_order}")

    def top(title: str, counter: Counter[str], n: int = 6) -> Table:
        table = Table(title=title, expand=True, show_edge=False)
        table.add_column(title.split()[0])
        table.add_column("clicks", justify="right")
        for key, count in counter.most_common(n):
            table.add_row(key, str(count))
        return table

    lag_table = Table(title="consumer lag", expand=True, show_edge=False)
    lag_table.add_column("group")
    lag_table.add_column("records", justify="right")
    for group, value in lag.items():
        lag_table.add_row(group.removeprefix("clickwire-"), "-" if value is None else str(value))
    grid = Table.grid(expand=True)
    for _ in range(4):
        grid.add_column(ratio=1)
    grid.add_row(top("links (top)", tap.links), top("countries", tap.countries),
                 top("bot kinds", tap.bot_kinds), lag_table)
    title = f"clickwire live - {time.monotonic() - started:.0f} s - Ctrl-C stops everything"
    return Group(Panel(head, title=title), grid)
