"""Materialize a compacted topic in memory and follow it live.

Links and webhook subscriptions live in compacted topics (the system of record). Every service
that needs them keeps a :class:`TopicTable`: at start it reads each partition from the beginning
to the end offsets it saw when it started (``wait_loaded``), then keeps applying new records, so a
change made through the API reaches every process within the consumer's fetch wait (~100 ms).

No consumer group is used: every process reads every partition, and nothing is committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from clickwire.kafka import FETCH_MAX_WAIT_MS, stop_consumer_task, topic_partitions
from clickwire.logs import RateLimited
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

V = TypeVar("V")
log = structlog.get_logger(__name__)
OnChange = Callable[[str, V | None, V | None], None]


class TopicTable(Generic[V]):
    """A dict of key -> latest value of a compacted topic, kept current in the background."""

    def __init__(self, common: CommonSettings, topic: Topic, decode: Callable[[bytes], V], *,
                 on_change: OnChange[V] | None = None, fetch_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
        self._common = common
        self._topic = name(topic, common.topic_prefix)
        self._decode = decode
        self._on_change = on_change
        self._fetch_wait_ms = fetch_wait_ms
        self._data: dict[str, V] = {}
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._bad = RateLimited()
        self.records_applied = 0
        self.decode_errors = 0
        self.last_applied_at = 0.0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str) -> V | None:
        """The latest value for a key, or None when absent or deleted."""
        return self._data.get(key)

    def items(self) -> Iterator[tuple[str, V]]:
        """A snapshot of every key and value."""
        return iter(list(self._data.items()))

    @property
    def loaded(self) -> bool:
        """True once the initial read up to the start-time end offsets is done."""
        return self._loaded.is_set()

    async def start(self) -> None:
        """Assign every partition from the beginning and start following in the background."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._common.bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_wait_ms, auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        tps = await topic_partitions(consumer, self._topic)
        if not tps:
            await consumer.stop()
            raise RuntimeError(f"topic {self._topic} has no partitions (does it exist?)")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer, ends), name=f"follow-{self._topic}")

    async def wait_loaded(self, timeout_s: float = 30.0) -> None:
        """Wait until the table holds everything that was on the topic when it started."""
        await asyncio.wait_for(self._loaded.wait(), timeout_s)

    async def _run(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        pending = {tp for tp, end in ends.items() if end > 0}
        if not pending:
            self._loaded.set()
        while True:
            batches = await consumer.getmany(timeout_ms=self._fetch_wait_ms)
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value, record.topic, record.partition, record.offset)
            if pending:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    self._loaded.set()

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None, topic: str, partition: int, offset: int) -> None:
        if raw_key is None:
            return
        key = raw_key.decode()
        old = self._data.get(key)
        new: V | None = None
        if raw_value is None:
            self._data.pop(key, None)
        else:
            try:
                new = self._decode(raw_value)
            except Exception as exc:  # a bad record must not stop the table from following
                self.decode_errors += 1
                if self._bad.allow(topic):
                    log.warning("undecodable record skipped", topic=topic, partition=partition, offset=offset,
                                error=f"{type(exc).__name__}: {exc}")
                return
            self._data[key] = new
        self.records_applied += 1
        self.last_applied_at = time.time()
        if self._on_change is not None:
            self._on_change(key, old, new)

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        await stop_consumer_task(self._task, self._consumer)
