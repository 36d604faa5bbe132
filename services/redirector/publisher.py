"""The click publisher: the response path hands a click over and never waits for Kafka.

``submit()`` appends the click (a tuple, see rawclick.py) to an in-memory deque (O(1), no I/O).
One background task takes what has accumulated, finishes and Avro-encodes each click (``encode``,
rawclick.Finisher.encode: the per-click work the response path leaves for later; in slices of
``ENCODE_SLICE``, yielding in between to the event loop the response path shares) and writes it
into its partition's Kafka record batch (clickwire/recordbatch.py; the partition is the Java
client's murmur2 of the link id, so per-link order holds and other producers agree). The batches go
through an idempotent ``acks=all`` producer (zstd, level 1), and the round awaits their acks before
the next: one round in flight at a time, so a failure is always attributable to its records.

When a send fails (no ack within ``request_timeout_ms`` + 1 s; aiokafka would retry an unreachable
broker forever, so its queued batches are failed and the producer replaced by a fresh one, whose new
producer id restarts the sequence numbers), the failed records go to the disk :class:`Spool`, and
so does everything queued after them until the spool has been replayed, in order; only then do clicks go straight to
Kafka again. When the deque is full (``queue_max``) a click is encoded and spooled on the spot.

Ordering caveat: a click spooled because the deque was full can land in the spool before older
clicks still in the deque. Per-link order is otherwise kept, including across outages.

Exactly once on the topic: the producer is idempotent, so its own retries during a broker restart
never duplicate. A record is spooled only after aiokafka gave up on it, but the broker may have
written its batch and lost only the acknowledgement (it stopped before answering). So the publisher
keeps, per partition, the offset after its last acknowledged batch (taken from the topic's end
offsets when it first connects, then from each ack), and remembers the click ids of every failed
round as unverified. Before anything is sent again it reads each partition from that mark to its
current end (ontopic.py, read_committed, bounded by a deadline; while the broker cannot be read it
keeps spooling and retries). Spooled records whose click id was found there are dropped, not
re-sent (``clickwire_redirector_already_on_topic_total``), and the marks move to the ends read.
A partition's mark only moves on an ack when no batch of that round failed on it, so an
unacknowledged batch is never behind the mark. Left open: clicks still unverified when the
process stops with the broker down are re-published by the next start without the check.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.record.util import calc_crc32c
from prometheus_client import Counter, Gauge, Histogram

from clickwire.codec import codec_for
from clickwire.kafka import key_partitioner, make_producer
from clickwire.logs import RateLimited
from clickwire.recordbatch import ZSTD, RecordBatch, RecordBatcher
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.redirector import ontopic, rawclick
from services.redirector.rawclick import Captured, RawClick
from services.redirector.spool import Spool

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

log = structlog.get_logger(__name__)

PUBLISHED = Counter("clickwire_redirector_published_total", "Clicks acknowledged by Kafka")
SEND_FAILED = Counter("clickwire_redirector_send_failures_total", "Clicks whose send failed (then spooled)")
QUEUED = Gauge("clickwire_redirector_queue_depth", "Clicks waiting in memory for the publisher")
BROKER_UP = Gauge("clickwire_redirector_broker_up", "1 when the last send or replay succeeded")
SEND_SECONDS = Histogram("clickwire_redirector_send_seconds", "Time from send to acks for one round",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30))
ALREADY_ON_TOPIC = Counter("clickwire_redirector_already_on_topic_total",
                           "Spooled clicks not re-sent because a failed round had written them after all")

Record = tuple[bytes, bytes]
RETRY_S: Final = 0.25
FLUSH_S: Final = 0.02
# Clicks finished and encoded between two yields to the event loop, which answers requests on the
# same thread: ~2 us each, so a round that caught up after a slow acknowledgement (up to batch_max
# clicks) holds requests for at most ~1 ms at a time. Much smaller slices starve the publisher under
# saturation: with 64, each yield let a whole loop iteration of requests in first, a round of 2,000
# clicks took ~70 ms, the queue reached queue_max and clicks overflowed to the spool.
ENCODE_SLICE: Final = 512
# A partition's batch is closed at this many bytes of records (uncompressed), as aiokafka's
# max_batch_size in make_producer; a round can send several batches per partition.
BATCH_BYTES: Final = 256 * 1024
# zstd level 1 with one compressor kept for the process: a fresh context per batch (aiokafka's
# zstd_encode, level 3) spends much of its time setting up tables. On clicks, level 1 compresses
# 537-record batches to the same size as level 3 (27 KB against 29 KB of 154 KB) in 0.62 us a
# record against 0.71, and reusing the context saves a further ~0.06 (docs/performance.md).
ZSTD_LEVEL: Final = 1


def _batcher(partition: Callable[[bytes], int]) -> RecordBatcher:
    """Batches of zstd-compressed records, like the rest of the project's producers (make_producer)."""
    compressor = zstd.ZstdCompressor(level=ZSTD_LEVEL)
    return RecordBatcher(partition, BATCH_BYTES, ZSTD,
                       functools.partial(compressor.compress, mode=zstd.ZstdCompressor.FLUSH_FRAME), calc_crc32c)


class ClickPublisher:
    """Queues raw clicks and publishes them in batches; spools to disk what Kafka cannot take."""

    def __init__(self, common: CommonSettings, spool: Spool, *, queue_max: int = 100_000,
                 batch_max: int = 2000, request_timeout_ms: int = 5000,
                 producer_factory: Callable[..., AIOKafkaProducer] = make_producer,
                 encode: Callable[[Any], bytes] | None = None) -> None:
        self._common = common
        self._spool = spool
        self._queue: collections.deque[tuple[bytes, Captured | RawClick]] = collections.deque()
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._topic = name(Topic.CLICKS_RAW, common.topic_prefix)
        header = codec_for(Topic.CLICKS_RAW, common.schema_registry_url).header
        # How a submitted click becomes the record value (rawclick.Finisher.encode for captured
        # clicks); by default clicks are RawClicks already.
        self._encode: Callable[[Any], bytes] = encode or functools.partial(rawclick.encode, header)
        self._header_len = len(header)
        # Per partition, the offset after our last acknowledged batch (or the end last verified):
        # anything of ours that may be on the topic unacknowledged is at or after it.
        self._marks: dict[int, int] = {}
        # Click ids of failed rounds: possibly on the topic, not checked yet. Nothing is sent while
        # this is non-empty.
        self._unverified: set[str] = set()
        # Click ids a check found on the topic whose spooled copy has not been skipped yet.
        self._on_topic: set[str] = set()
        self._request_timeout_ms = request_timeout_ms
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        # Records into batches by partition (the Java client's murmur2 of the link id, so every
        # producer puts a link on one partition); made on connect, when the partitions are known.
        self._batcher: RecordBatcher | None = None
        self._wake = asyncio.Event()
        self._idle = False
        self._stopping = False
        self._deadline = float("inf")
        self._healthy = False
        self._replay: tuple[list[Record], int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._limiter = RateLimited(5.0)
        self.published = 0
        self.overflowed = 0

    # -- the response path -------------------------------------------------------------------

    def submit(self, key: bytes, click: Captured | RawClick) -> None:
        """Hand one click over for publishing; never blocks, never raises for a full queue."""
        if len(self._queue) >= self._queue_max:
            # Finishing and encoding here costs ~5 us, only while the publisher is this far behind.
            self.overflowed += 1
            self._spool.append(key, self._encode(click))
            return
        self._queue.append((key, click))
        if self._idle:
            self._idle = False
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background sender (the producer connects there, so a down broker is fine)."""
        self._task = asyncio.create_task(self._run(), name="click-publisher")
        self._flusher = asyncio.create_task(self._flush_loop(), name="spool-flusher")

    async def stop(self, drain_s: float) -> None:
        """Publish what is queued and spooled within `drain_s`; spool whatever is left; stop."""
        self._stopping = True
        self._deadline = time.monotonic() + drain_s
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except Exception as exc:  # the task already logged; leftovers are spooled below
                log.error("publisher failed while draining", error=repr(exc))
        self._spool_queue()
        if self._replay is not None:
            # Some of this chunk was published: move the rest to the end of the spool so the
            # next start does not publish the published part again.
            records, offset = self._replay
            for key, value in self._not_on_topic(records):
                self._spool.append(key, value)
            await self._spool.commit(offset)
            self._replay = None
        if self._unverified:
            log.warning("stopping before the broker could be read: spooled clicks of the failed round "
                        "may be published twice by the next start", unverified=len(self._unverified))
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._spool.flush()
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
        log.info("publisher stopped", published=self.published, left_in_spool_bytes=self._spool.unread)

    @property
    def queued(self) -> int:
        """Clicks waiting in memory."""
        return len(self._queue)

    @property
    def healthy(self) -> bool:
        """True when the last send to Kafka succeeded."""
        return self._healthy

    # -- the sender --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            QUEUED.set(len(self._queue))
            if self._stopping and (
                time.monotonic() >= self._deadline or (not self._queue and not self._spool.unread)
            ):
                return
            if self._producer is None and not await self._connect():
                self._spool_queue()
                await self._pause(RETRY_S)
                continue
            if self._unverified and not await self._verify():
                # Sending now could publish written-but-unacknowledged clicks a second time.
                self._spool_queue()
                await self._pause(RETRY_S)
                continue
            if self._spool.unread:
                # Everything newer than the spool goes behind it, so order holds.
                self._spool_queue()
                if not await self._replay_chunk():
                    await self._pause(RETRY_S)
                continue
            if not self._queue:
                self._idle = True
                await self._pause(0.1)
                continue
            failed = await self._send(await self._encode_round(min(self._batch_max, len(self._queue))))
            if failed:
                for key, value in failed:
                    self._spool.append(key, value)
                await self._spool.flush()

    async def _encode_round(self, n: int) -> list[tuple[int, RecordBatch]]:
        """Finish and encode the next `n` queued clicks into batches; the event loop answers requests between slices."""
        assert self._batcher is not None  # connected
        for start in range(0, n, ENCODE_SLICE):
            if start:
                await asyncio.sleep(0)
            self._batcher.take(self._queue, min(ENCODE_SLICE, n - start), self._encode)
        return self._batcher.batches()

    def _batches_of(self, records: list[Record]) -> list[tuple[int, RecordBatch]]:
        """Spooled records as batches. Record timestamps say when the redirector sent a record (the
        click's own time is in the record), so replayed ones carry the time of the replay."""
        assert self._batcher is not None  # connected
        ts_ms = time.time_ns() // 1_000_000
        for key, value in records:
            self._batcher.add(key, value, ts_ms)
        return self._batcher.batches()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _connect(self) -> bool:
        producer = self._producer_factory(self._common, request_timeout_ms=self._request_timeout_ms,
                                          linger_ms=1)
        try:
            await asyncio.wait_for(producer.start(), self._request_timeout_ms / 1000)
            partitions = await asyncio.wait_for(producer.partitions_for(self._topic),
                                                self._request_timeout_ms / 1000)
            new = [p for p in partitions if p not in self._marks]
            if new:
                # Nothing of ours is on a partition before its first send: its end is our mark.
                self._marks.update(await ontopic.end_offsets(self._common, self._topic, new,
                                                             self._request_timeout_ms / 1000))
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            self._set_health(False, exc)
            return False
        self._producer = producer
        self._batcher = _batcher(key_partitioner(sorted(partitions)))
        log.info("publisher connected", topic=self._topic, partitions=len(partitions))
        return True

    async def _send(self, batches: list[tuple[int, RecordBatch]]) -> list[Record]:
        """Send batches, one round in flight; return the records Kafka did not take."""
        assert self._producer is not None
        producer = self._producer
        started = time.perf_counter()
        pending: list[tuple[asyncio.Future[Any], RecordBatch, int]] = []
        failed: list[Record] = []
        failed_partitions: set[int] = set()
        acked_to: dict[int, int] = {}
        error: BaseException | None = None
        for partition, batch in batches:
            try:
                fut = await producer.send_batch(batch, self._topic, partition=partition)
            except (KafkaError, OSError) as exc:
                failed.extend(batch.records())
                failed_partitions.add(partition)
                error = exc
                continue
            pending.append((fut, batch, partition))
        if pending:
            timeout = self._request_timeout_ms / 1000 + 1
            futures = [fut for fut, _, _ in pending]
            _, stuck = await asyncio.wait(futures, timeout=timeout)
            if stuck:
                # aiokafka retries a batch for an unreachable broker without ever expiring it: fail
                # what it still holds (it will then never send it), then let in-flight requests end.
                producer._message_accumulator.fail_all(KafkaTimeoutError("broker unreachable"))
                _, stuck = await asyncio.wait(stuck, timeout=timeout)
            for fut, batch, partition in pending:
                problem = fut.exception() if fut.done() and not fut.cancelled() else KafkaTimeoutError("no ack")
                if problem is None:
                    count = batch.record_count()
                    self.published += count
                    PUBLISHED.inc(count)
                    acked_to[partition] = max(acked_to.get(partition, 0), fut.result().offset + count)
                else:
                    failed.extend(batch.records())
                    failed_partitions.add(partition)
                    error = problem
        for partition, end in acked_to.items():
            # A failed batch on this partition may sit before an acknowledged one (its request was
            # written, then failed locally): keep the mark where the check will still see it.
            if partition not in failed_partitions:
                self._marks[partition] = max(self._marks.get(partition, 0), end)
        SEND_SECONDS.observe(time.perf_counter() - started)
        if failed:
            SEND_FAILED.inc(len(failed))
            for _, value in failed:
                cid = ontopic.click_id_of(value, self._header_len)
                if cid is not None:
                    self._unverified.add(cid)
            await self._discard_producer()
        self._set_health(not failed, error)
        return failed

    async def _discard_producer(self) -> None:
        # aiokafka keeps counting sequence numbers for batches that expired unsent, so after a
        # failure the broker would refuse every later batch (OutOfOrderSequence). A new producer
        # gets a new producer id and starts its sequences afresh.
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer._message_accumulator.fail_all(KafkaTimeoutError("producer discarded"))
                await asyncio.wait_for(producer.stop(), self._request_timeout_ms / 1000 + 1)

    async def _replay_chunk(self) -> bool:
        """Publish the next spooled chunk (or what failed of it last time); True when all of it went."""
        if self._replay is None:
            records, offset = await self._spool.read_chunk()
            if not records:
                return True
            self._replay = (records, offset)
        records, offset = self._replay
        records = self._not_on_topic(records)
        failed = await self._send(self._batches_of(records)) if records else []
        if failed:
            self._replay = (failed, offset)
            return False
        self._replay = None
        await self._spool.commit(offset)
        if not self._spool.unread:
            self._on_topic.clear()  # every id found has been skipped or is no longer spooled
            log.info("spool replayed", published=self.published)
        return True

    async def _verify(self) -> bool:
        """Find which unverified clicks the broker wrote after all; False when it cannot be read yet."""
        timeout = max(10.0, 2 * self._request_timeout_ms / 1000)
        try:
            found, ends = await ontopic.find_click_ids(self._common, self._topic, dict(self._marks),
                                                       self._unverified, self._header_len, timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._set_health(False, exc)
            return False
        log.info("checked the topic for clicks of failed sends", unverified=len(self._unverified),
                 already_on_topic=len(found))
        self._on_topic |= found
        self._unverified.clear()
        for partition, end in ends.items():
            self._marks[partition] = max(self._marks.get(partition, 0), end)
        return True

    def _not_on_topic(self, records: list[Record]) -> list[Record]:
        """`records` without those a check found on the topic (order kept)."""
        if not self._on_topic:
            return records
        kept: list[Record] = []
        for record in records:
            cid = ontopic.click_id_of(record[1], self._header_len)
            if cid is not None and cid in self._on_topic:
                self._on_topic.discard(cid)  # a click id is spooled once
                ALREADY_ON_TOPIC.inc()
            else:
                kept.append(record)
        return kept

    def _spool_queue(self) -> None:
        while self._queue:
            key, click = self._queue.popleft()
            self._spool.append(key, self._encode(click))

    async def _flush_loop(self) -> None:
        # fsync in small batches, off the response path.
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self._spool.flush()
            except OSError as exc:
                if self._limiter.allow("flush"):
                    log.error("spool write failed", error=repr(exc))

    def _set_health(self, ok: bool, error: BaseException | None) -> None:
        if ok != self._healthy:
            if ok:
                log.info("broker reachable, publishing", topic=self._topic)
            else:
                log.warning("broker unreachable, spooling clicks to disk", topic=self._topic,
                            error=repr(error), spool=str(self._spool.path))
        self._healthy = ok
        BROKER_UP.set(1 if ok else 0)
