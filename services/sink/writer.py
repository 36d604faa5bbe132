"""The batch writer: consumer group -> per-partition batches -> ClickHouse insert -> offset commit.

What is safe to retry at each step (and why nothing is lost or double-counted):

1. Poll. Records are cut into batches per partition: a batch closes at exactly `batch_max`
   records, or when it is `flush_ms` old. Undecodable or out-of-range records stay in the batch's
   offset range but go to the dead-letter topic instead of the table.
2. Dead letters first, then one INSERT per batch carrying
   `insert_deduplication_token = "{topic}:{partition}:{first_offset}-{last_offset}"`. A retried
   insert (timeout, crash before commit) with the same token is dropped by ClickHouse.
3. Commit `last_offset + 1` only after the insert was acknowledged. A failure anywhere before this
   leaves the offsets where they were: the records are read again, never skipped.

After a crash the group resumes at the last committed offset, but a batch cut by time may be cut
differently the second time, so its token differs. Two things keep counts exact anyway: for the
first `batch_max` records after a partition is assigned (the only records that can have been
inserted but not committed, since nothing else is inserted until the commit succeeds) the writer
asks ClickHouse which click ids it already holds and leaves them out, and keeps asking for as long
as it finds some (a group reset to an older offset replays far more than one batch); and clicks is a
ReplacingMergeTree ordered by click id, with exact questions asked through uniqExact(click_id) or
FINAL, so any leftover (e.g. batch_max lowered between runs) collapses.

When ClickHouse fails, the writer keeps the batches, pauses every partition (so memory stays
bounded by one fetch per partition) and retries with exponential backoff capped at `retry_max_s`,
still polling so the group membership holds. Lag per partition is exported as clickwire_sink_lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from clickwire.clickhouse import ClickHouseError, ClickHouseStore
from clickwire.clickhouse.formats import sql_string
from clickwire.deadletter import DeadLetters, InvalidMessage
from clickwire.kafka import BULK_FETCH, make_consumer, make_producer
from clickwire.logs import RateLimited
from clickwire.topics import Topic, name
from services.sink.settings import SinkSettings
from services.sink.tables import MAPPINGS, InvalidRecord, LinkTombstone, Row, TableMapping, resolve_links

log = structlog.get_logger(__name__)

SERVICE = "sink"
SINK_TOPICS: tuple[Topic, ...] = tuple(MAPPINGS)

LAG = Gauge("clickwire_sink_lag", "Records on the topic not yet written and committed", ["topic", "partition"])
ROWS = Counter("clickwire_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
BATCHES = Counter("clickwire_sink_batches_total", "Batches inserted into ClickHouse", ["table"])
REPLAYED = Counter("clickwire_sink_replayed_rows_total", "Rows left out because ClickHouse already had them",
                   ["table"])
FAILURES = Counter("clickwire_sink_insert_failures_total", "Failed flushes (insert, dead letters or commit)")
INSERT_SECONDS = Histogram("clickwire_sink_insert_seconds", "Time of one batch insert", ["table"],
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
FAILING = Gauge("clickwire_sink_writes_failing", "1 while flushes fail and partitions are paused")

_BACKOFF_START_S = 0.1
_REVOKE_WAIT_S = 10.0


@dataclass
class Batch:
    """Records of one partition, cut at a fixed size or age, written with one dedup token."""

    tp: TopicPartition
    mapping: TableMapping
    first_offset: int
    started: float
    last_offset: int = -1
    items: list[tuple[int, Row | LinkTombstone]] = field(default_factory=list)
    invalid: list[InvalidMessage] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Records covered, valid or not."""
        return self.last_offset - self.first_offset + 1

    @property
    def token(self) -> str:
        """The insert_deduplication_token of this batch."""
        return f"{self.tp.topic}:{self.tp.partition}:{self.first_offset}-{self.last_offset}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._writer._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._writer._on_assigned(set(assigned))


class BatchWriter:
    """Consumes the sink topics and writes them to ClickHouse in idempotent, committed batches."""

    def __init__(self, settings: SinkSettings, store: ClickHouseStore) -> None:
        self._settings = settings
        self._store = store
        prefix = settings.common.topic_prefix
        self._by_topic: dict[str, TableMapping] = {name(t, prefix): m for t, m in MAPPINGS.items()}
        self._batches: dict[TopicPartition, list[Batch]] = {}
        self._to_commit: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._replay_until: dict[TopicPartition, int] = {}
        self._new_assignment: set[TopicPartition] = set()
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._dead: DeadLetters | None = None
        self._log_limit = RateLimited(1.0)
        self._failing_since: float | None = None
        self._last_flush = time.monotonic()
        self._lag_task: asyncio.Task[None] | None = None
        self.rows_written = 0
        self.failed_flushes = 0
        self.running = False

    async def start(self) -> None:
        """Start the dead-letter producer and join the consumer group on every sink topic."""
        common = self._settings.common
        self._producer = make_producer(common)
        await self._producer.start()
        self._dead = DeadLetters(common, self._producer, SERVICE)
        self._consumer = make_consumer(
            common, group_id=self._settings.group_id, max_poll_records=self._settings.batch_max, **BULK_FETCH,
        )
        self._consumer.subscribe(list(self._by_topic), listener=_Rebalance(self))
        await self._consumer.start()
        self._lag_task = asyncio.create_task(self._report_lag(), name="sink-lag")
        self.running = True

    async def run(self, stop: asyncio.Event) -> None:
        """Write until `stop` is set, then flush and commit what is buffered and leave the group."""
        assert self._consumer is not None, "start() first"
        consumer = self._consumer
        backoff = _BACKOFF_START_S
        flush_s = self._settings.flush_ms / 1000
        try:
            while not stop.is_set():
                if self._due(time.monotonic(), flush_s):
                    if await self._flush(force=False):
                        backoff = _BACKOFF_START_S
                    else:
                        # Keep polling (paused) so the group does not evict us, and wait out the backoff.
                        self._add_all(await consumer.getmany(timeout_ms=0))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), backoff)
                        backoff = min(backoff * 2, self._settings.retry_max_s)
                        continue
                timeout_ms = max(1, int(self._time_to_due(time.monotonic(), flush_s) * 1000))
                self._add_all(await consumer.getmany(timeout_ms=min(timeout_ms, 100)))
            await self._final_flush()
        finally:
            await self._close()

    async def _final_flush(self) -> None:
        deadline = time.monotonic() + max(5.0, self._settings.retry_max_s * 2)
        backoff = _BACKOFF_START_S
        while not await self._flush(force=True):
            if time.monotonic() + backoff > deadline:
                log.warning("stopping with unwritten batches; they will be read again", batches=self._pending())
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._settings.retry_max_s)

    async def _close(self) -> None:
        self.running = False
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    def health(self) -> dict[str, Any]:
        """What /health reports: running, failing writes, buffered records, lag per partition."""
        now = time.monotonic()
        return {
            "ok": self.running,
            "writes_failing": self._failing_since is not None,
            "failing_for_s": round(now - self._failing_since, 1) if self._failing_since else 0.0,
            "buffered_batches": self._pending(),
            "rows_written": self.rows_written,
            "last_flush_age_s": round(now - self._last_flush, 2),
        }

    def committed(self) -> dict[TopicPartition, int]:
        """Offsets this writer committed (next offset to read), by partition."""
        return dict(self._committed)

    # -- batching ------------------------------------------------------------------------------

    def _add_all(self, fetched: Mapping[TopicPartition, Sequence[Any]]) -> None:
        for tp, records in fetched.items():
            for record in records:
                self._add(tp, record.offset, record.key, record.value, record.timestamp)

    def _add(self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes | None, ts: int) -> None:
        mapping = self._by_topic[tp.topic]
        if tp in self._new_assignment:
            # Only records up to one batch past the resume point can have been inserted uncommitted.
            self._new_assignment.discard(tp)
            self._replay_until[tp] = offset + self._settings.batch_max
        queue = self._batches.setdefault(tp, [])
        if not queue or queue[-1].size >= self._settings.batch_max:
            queue.append(Batch(tp, mapping, offset, time.monotonic()))
        batch = queue[-1]
        batch.last_offset = offset
        try:
            batch.items.append((offset, mapping.to_row(key, value, ts, self._settings.common.schema_registry_url)))
        except InvalidRecord as bad:
            batch.invalid.append(InvalidMessage(tp.topic, tp.partition, offset, key, value or b"",
                                                bad.error_class, str(bad)))

    def _due(self, now: float, flush_s: float) -> bool:
        return any(
            len(queue) > 1 or queue[0].size >= self._settings.batch_max or now - queue[0].started >= flush_s
            for queue in self._batches.values() if queue
        ) or bool(self._to_commit)

    def _time_to_due(self, now: float, flush_s: float) -> float:
        oldest = min((q[0].started for q in self._batches.values() if q), default=None)
        return flush_s if oldest is None else max(0.0, oldest + flush_s - now)

    def _pending(self) -> int:
        return sum(len(q) for q in self._batches.values())

    # -- writing ---------------------------------------------------------------------------------

    async def _flush(self, *, force: bool, only: set[TopicPartition] | None = None) -> bool:
        """Write due batches (all when force) and commit; False when something failed (retry later)."""
        async with self._lock:
            now = time.monotonic()
            flush_s = self._settings.flush_ms / 1000
            try:
                for tp, queue in list(self._batches.items()):
                    if only is not None and tp not in only:
                        continue
                    while queue and (force or len(queue) > 1 or queue[0].size >= self._settings.batch_max
                                     or now - queue[0].started >= flush_s):
                        await self._write(queue[0])
                        self._to_commit[tp] = queue.pop(0).last_offset + 1
                await self._commit(only)
            except (ClickHouseError, KafkaError, OSError) as exc:
                self._failed(exc)
                return False
            if self._failing_since is not None:
                log.info("writes recovered", failed_for_s=round(time.monotonic() - self._failing_since, 1))
                self._failing_since = None
                FAILING.set(0)
                self._resume()
            self._last_flush = time.monotonic()
            return True

    async def _commit(self, only: set[TopicPartition] | None) -> None:
        offsets = {tp: o for tp, o in self._to_commit.items() if only is None or tp in only}
        if not offsets:
            return
        assert self._consumer is not None
        await self._consumer.commit(offsets)
        for tp, offset in offsets.items():
            self._committed[tp] = offset
            self._to_commit.pop(tp, None)

    async def _write(self, batch: Batch) -> None:
        if batch.invalid:
            assert self._dead is not None
            for bad in batch.invalid:
                await self._dead.send(bad)
            batch.invalid.clear()  # sent: a retry of the insert must not send them twice
        items = [item for _, item in batch.items]
        if batch.mapping.topic is Topic.LINKS:
            rows = await resolve_links(self._store, items)
        else:
            rows = [item for item in items if not isinstance(item, LinkTombstone)]
        if batch.mapping.topic is Topic.CLICKS_ENRICHED and batch.first_offset < self._replay_until.get(batch.tp, -1):
            fresh = await self._not_yet_stored(rows)
            if len(fresh) < len(rows):
                # Still inside a replay (a reset group, a restored offset): keep checking past this batch.
                self._replay_until[batch.tp] = batch.last_offset + 1 + self._settings.batch_max
            rows = fresh
        if rows:
            started = time.perf_counter()
            await self._store.insert(batch.mapping.table, rows, dedup_token=batch.token)
            INSERT_SECONDS.labels(batch.mapping.table).observe(time.perf_counter() - started)
            ROWS.labels(batch.mapping.table).inc(len(rows))
            BATCHES.labels(batch.mapping.table).inc()
            self.rows_written += len(rows)

    async def _not_yet_stored(self, rows: Sequence[Row]) -> list[Row]:
        if not rows:
            return []
        times = [int(r["ts_ms"]) for r in rows]
        ids = ", ".join(sql_string(str(r["click_id"])) for r in rows)
        # ts_ms bounds let ClickHouse skip other months; the ids are quoted literals, not user input.
        sql = (
            "SELECT click_id FROM clickwire.clicks"  # noqa: S608
            f" WHERE ts_ms >= fromUnixTimestamp64Milli({min(times)}) AND ts_ms <= fromUnixTimestamp64Milli"
            f"({max(times)}) AND click_id IN ({ids})"
        )
        present = {row["click_id"] for row in await self._store.query(sql)}
        if present:
            REPLAYED.labels("clickwire.clicks").inc(len(present))
            log.info("left out clicks already in ClickHouse", count=len(present))
        return [r for r in rows if r["click_id"] not in present]

    def _failed(self, exc: Exception) -> None:
        FAILURES.inc()
        self.failed_flushes += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            FAILING.set(1)
            self._pause()
        if self._log_limit.allow("flush"):
            log.warning("flush failed; offsets not committed, retrying with backoff",
                        error=f"{type(exc).__name__}: {exc}", suppressed=self._log_limit.suppressed)

    def _pause(self) -> None:
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())

    def _resume(self) -> None:
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())

    # -- rebalancing and lag ---------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Write and commit what we hold for these partitions so the next owner starts after it;
        # if that fails the batches are dropped uncommitted and the next owner reads them again.
        try:
            ok = await asyncio.wait_for(self._flush(force=True, only=revoked), _REVOKE_WAIT_S)
        except TimeoutError:
            ok = False
        for tp in revoked:
            self._batches.pop(tp, None)
            self._to_commit.pop(tp, None)
            self._committed.pop(tp, None)
            self._replay_until.pop(tp, None)
            self._new_assignment.discard(tp)
            with contextlib.suppress(KeyError):
                LAG.remove(tp.topic, str(tp.partition))
        if not ok:
            log.warning("partitions revoked with unwritten batches; the next owner reads them again",
                        partitions=len(revoked))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._new_assignment |= assigned
        if self._failing_since is not None and self._consumer is not None:
            self._consumer.pause(*assigned)

    async def _report_lag(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            consumer = self._consumer
            if consumer is None:
                continue
            assigned = list(consumer.assignment())
            if not assigned:
                continue
            try:
                ends: Mapping[TopicPartition, int] = await consumer.end_offsets(assigned)
                for tp in assigned:
                    if tp not in self._committed:
                        self._committed[tp] = await consumer.committed(tp) or 0
                    LAG.labels(tp.topic, str(tp.partition)).set(max(0, ends.get(tp, 0) - self._committed[tp]))
            except (KafkaError, OSError) as exc:  # lag is best effort; the writer goes on
                if self._log_limit.allow("lag"):
                    log.warning("cannot read end offsets for lag", error=f"{type(exc).__name__}: {exc}")
