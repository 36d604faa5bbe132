"""The Faust app: clicks.raw -> enrich -> clicks.enriched, with in-memory velocity and link counts.

Faust owns the consumer side: group membership, rebalances, fetching (on its consumer thread),
offset tracking and commits. What it does per event (a task-spawning `wait_first` per message in
the consumer's drain loop, a channel queue, the stream iterator, sensors) capped a byte-forwarding
agent at ~3.5-9k events/s here, so clicks.raw skips it: `_Consumer._drain_messages` hands each
fetched batch to :meth:`EnricherApp.handle_batch`, which enriches each click with the spliced fast
path (fastpath.py; ClickStream.process for whatever it refuses), appends the records to one
record batch per output partition and hands those to one raw aiokafka producer (zstd, no linger)
without waiting; a small number of batches stay in flight while the next one is enriched.

Delivery is at-least-once (Faust's exactly-once mode has open bugs, see the brief). A message is
acked to Faust's consumer only once (1) its enriched record is on the broker and (2) a links.stats
publish that counts it is on the broker (at most one stats interval later). Faust commits only
acked, contiguous offsets, so a committed click always has its enriched record and its count
published; a crash replays the clicks after the last commit (the sinks dedup by click id, link
counts may run high: stats.py). A batch whose records cannot be delivered stays unacked, which
stalls the commit of its partitions until a restart replays them; /health says so.

Velocity and link counts are per-partition state in memory (velocity.py, stats.py): dropped on
revocation, link counts re-read from links.stats at assignment.

Faust's own web server is disabled; health and metrics come from clickwire's HealthServer (cli.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import faust
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message, TransportT
from prometheus_client import Counter, Histogram

from clickwire.avrobin import varint
from clickwire.codec import codec_for
from clickwire.deadletter import DeadLetters, InvalidMessage
from clickwire.kafka import STREAM_DELIVERY_TIMEOUT_MS, key_partitioner, make_producer
from clickwire.topics import Topic, name, spec
from services.enricher.avro import Unsupported, encode_link_stats
from services.enricher.chain import Enricher
from services.enricher.links import LinkIndex
from services.enricher.settings import EnricherSettings
from services.enricher.stats import LinkCounts, link_stats_record, read_totals
from services.enricher.stream import ClickStream, Source
from services.enricher.velocity import PartitionVelocity

log = structlog.get_logger(__name__)

CLICKS = Counter("clickwire_enricher_clicks_total", "Clicks enriched and produced", ["kind"])
STATS_PUBLISHED = Counter("clickwire_enricher_link_stats_published_total", "link_stats records produced")
BATCH = Histogram("clickwire_enricher_batch_size", "Messages per fetched batch",
                  buckets=(1, 5, 20, 50, 100, 250, 500, 1000, 2000))
SLOW_PATH = Counter("clickwire_enricher_slow_path_total",
                    "Clicks the spliced fast path left to decode -> enrich -> encode (fastpath.py)")
LAG = Histogram("clickwire_enricher_click_age_seconds", "Click timestamp to enrichment",
                buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60))
SERVICE = "enricher"
# Batches enriched and sent but not yet on the broker: enough to overlap enrichment with the
# producer's round trip, few enough to bound memory and replay (at most 16 fetches, each at most
# CLICKWIRE_ENRICHER_BATCH_SIZE clicks). At 1,000 clicks/s a fetch holds one to a few clicks, so 4
# capped the stream at 4 fetches per acknowledgement round trip, and a slow round trip queued clicks.
MAX_IN_FLIGHT = 16

BatchHandler = Callable[[list[Message]], Awaitable[None]]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500 and fetch_min_bytes=1; aiokafka reads them only in start().
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", 1500)
        consumer._fetch_min_bytes = getattr(self.app, "fetch_min_bytes", 1)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in the worker
        # Faust's loop, batched: same read-offset and gap bookkeeping, but one handler call per
        # fetched batch instead of a channel delivery (and four futures) per message.
        handler = cast(_App, self.app).batch_handler
        if handler is None:
            await super()._drain_messages(fetcher)
            return
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        unacked = self._unacked_messages
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batch = await self._next_batch()
                self.diag.unset_flag(CONSUMER_FETCHING)
                # No inline commit every broker_commit_every acks (Faust's loop has one): it held
                # fetching for a commit round trip; Faust's commit timer commits every
                # CLICKWIRE_ENRICHER_COMMIT_INTERVAL anyway.
                if batch:
                    for message in batch:
                        unacked.add(message)  # Faust's wait_empty() on revoke waits for our acks
                    await handler(batch)
                else:
                    await asyncio.sleep(0)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


    async def _next_batch(self) -> list[Message]:
        # Consumer.getmany() without its per-message highwater lookup and monitor call (~10 us per
        # message here); the same flow, generation and active-partition rules.
        records, active = await self._wait_next_records(1.0)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:
            await self.perform_seek()  # what getmany() does when a rebalance stopped the flow
            return []
        batch: list[Message] = []
        read_offset = self._read_offset
        to_message = self._to_message
        for tp, tp_records in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            for record in tp_records:
                offset = record.offset
                r_offset = read_offset[tp]
                if r_offset is not None and offset < r_offset:
                    continue  # already delivered (a seek back): Faust drops these too
                if r_offset and offset - r_offset > 1 and self.app.topics.acks_enabled_for(tp.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                read_offset[tp] = offset
                batch.append(to_message(tp, record))
        return batch


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    """faust.App with a configurable consumer fetch wait and minimum, and a batch handler for its consumer."""

    fetch_wait_ms: int = 1500
    fetch_min_bytes: int = 1
    batch_handler: BatchHandler | None = None

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


class EnricherApp:
    """The Faust app of the enricher, its in-memory state and the producer of enriched clicks."""

    def __init__(self, settings: EnricherSettings, *, enricher: Enricher | None = None,
                 partitions: int | None = None) -> None:
        common = settings.common
        self.settings = settings
        self.links = LinkIndex()
        self.stream = ClickStream(enricher or Enricher(settings.chain), common.schema_registry_url)
        self._stats_codec = codec_for(Topic.LINK_STATS, common.schema_registry_url)
        self.raw_topic = name(Topic.CLICKS_RAW, common.topic_prefix)
        self.enriched_topic = name(Topic.CLICKS_ENRICHED, common.topic_prefix)
        self.stats_topic = name(Topic.LINK_STATS, common.topic_prefix)
        raw_spec = spec(Topic.CLICKS_RAW)
        partitions = partitions or raw_spec.partitions
        self.app = _App(
            settings.faust_id,
            broker=[f"kafka://{host}" for host in common.kafka_bootstrap],
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=False,
            store="memory://",
            datadir=str(settings.data_dir),
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=settings.commit_interval_s,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.session_timeout_s / 5,
            broker_max_poll_records=settings.batch_size,
            topic_partitions=partitions,
            topic_replication_factor=raw_spec.replication_factor,
        )
        self.app.fetch_wait_ms = settings.fetch_wait_ms
        self.app.batch_handler = self.handle_batch
        self.velocity = PartitionVelocity(settings.velocity_window_s)
        self.counts = LinkCounts()
        self._producer: AIOKafkaProducer | None = None
        self._partition_of: Callable[[bytes], int] = lambda key: 0
        self._stats_partition_of: Callable[[bytes], int] = lambda key: 0
        self._dead_producer: AIOKafkaProducer | None = None
        self._dead_letters: DeadLetters | None = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight: set[asyncio.Task[None]] = set()
        # Delivered messages waiting for the links.stats publish that counts them, then acked.
        self._delivered: list[Message] = []
        self._stats_ready = asyncio.Event()
        self._stats_lock = asyncio.Lock()
        self._draining = False
        self.delivery_failed = False
        self.enriched = 0
        self.invalid = 0
        self.app.topics.add(self.app.topic(self.raw_topic, key_serializer="raw", value_serializer="raw"))
        self.app.timer(settings.stats_interval_s, name="publish-link-stats")(self.publish_stats)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    async def start_side_clients(self) -> None:
        """Start the enriched-click and dead-letter producers (call before the Faust worker starts)."""
        settings = self.settings
        compression = None if settings.compression == "none" else settings.compression
        # Rides out a broker restart (STREAM_DELIVERY_TIMEOUT_MS) instead of failing the batches it holds.
        self._producer = make_producer(settings.common, linger_ms=settings.linger_ms,
                                       compression_type=compression, max_batch_size=1024 * 1024,
                                       request_timeout_ms=STREAM_DELIVERY_TIMEOUT_MS)
        await self._producer.start()
        self._partition_of = key_partitioner(sorted(await self._producer.partitions_for(self.enriched_topic)))
        self._stats_partition_of = key_partitioner(sorted(await self._producer.partitions_for(self.stats_topic)))
        self._dead_producer = make_producer(settings.common, linger_ms=0)
        await self._dead_producer.start()
        self._dead_letters = DeadLetters(settings.common, self._dead_producer, SERVICE)

    async def stop_side_clients(self) -> None:
        """Stop the producers."""
        for producer in (self._producer, self._dead_producer):
            if producer is not None:
                await producer.stop()

    async def drain(self) -> None:
        """Stop taking batches, wait for the ones in flight, publish link stats and ack (before stop)."""
        self._draining = True
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        await self.publish_stats()

    async def handle_batch(self, messages: list[Message]) -> None:
        """Enrich a fetched batch and send it; returns once sent, delivery is awaited in the background."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("start_side_clients() was not called")
        await self._stats_ready.wait()
        await self._slots.acquire()
        if self._draining:  # left unacked: replayed after the restart
            self._slots.release()
            return
        BATCH.observe(len(messages))
        now_ms = int(time.time() * 1000)
        enriched_ms = varint(now_ms)
        fast, slow = self.stream.fast.process, self.stream.process
        link_for, velocity, count = self.links.get, self.velocity, self.counts.add
        topic, partition_of = self.enriched_topic, self._partition_of
        # One record batch per output partition (_append).
        batches: dict[int, BatchBuilder] = {}
        futures: list[asyncio.Future[Any]] = []
        done: list[Message] = []
        produced = bots = slowed = 0
        oldest_ts = now_ms / 1000
        for message in messages:
            partition = message.partition
            counts = velocity.of(partition)
            try:
                key, value, link_id, is_bot = fast(message.value, link_for, counts.count, enriched_ms)
            except Unsupported:
                slowed += 1
                src = Source(message.topic, partition, message.offset, message.key)
                try:
                    out = slow(message.value, src, link_for, counts.hit, now_ms=now_ms)
                except InvalidMessage as bad:
                    await self._dead_letter(bad)
                    done.append(message)  # its dead letter is on the broker: nothing left to do for it
                    continue
                key, value, link_id, is_bot = out.key, out.value, out.link_id, out.is_bot
            out_partition = partition_of(key)
            full = _append(producer, batches, out_partition, key, value)
            if full is not None:
                futures.append(await producer.send_batch(full, topic, partition=out_partition))
            count(partition, link_id, is_bot)
            produced += 1
            bots += is_bot
            done.append(message)
            oldest_ts = min(oldest_ts, message.timestamp)
        for out_partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=out_partition))
        CLICKS.labels("human").inc(produced - bots)
        CLICKS.labels("bot").inc(bots)
        SLOW_PATH.inc(slowed)
        LAG.observe(max(0.0, now_ms / 1000 - oldest_ts))
        task = asyncio.create_task(self._await_delivery(futures, done, produced))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _await_delivery(self, futures: list[asyncio.Future[Any]], messages: list[Message],
                              produced: int) -> None:
        try:
            if futures:
                await asyncio.gather(*futures)
        except Exception as exc:
            # Not acked: Faust cannot commit past these offsets, a restart replays them.
            self.delivery_failed = True
            log.error("enriched clicks not delivered", clicks=produced, error=f"{type(exc).__name__}: {exc}")
        else:
            self.enriched += produced
            self._delivered.extend(messages)
        finally:
            self._slots.release()

    async def _dead_letter(self, bad: InvalidMessage) -> None:
        self.invalid += 1
        if self._dead_letters is None:
            raise RuntimeError("start_side_clients() was not called") from bad
        await self._dead_letters.send(bad)

    async def publish_stats(self) -> None:
        """Publish the counts of every link changed since the last call, then ack what they count."""
        producer = self._producer
        if producer is None:
            return
        async with self._stats_lock:
            # Taken before the counts: every delivered message was counted before it got here.
            ready, self._delivered = self._delivered, []
            changed = self.counts.take_dirty()
            try:
                sent = await self._send_stats(producer, changed, int(time.time() * 1000))
                if sent:
                    await asyncio.gather(*sent)
            except Exception as exc:  # retried on the next tick, acks with it
                self.counts.dirty.update(link_id for link_id, _ in changed)
                self._delivered[:0] = ready
                log.warning("link stats not published", links=len(changed), error=type(exc).__name__)
                return
            STATS_PUBLISHED.inc(len(changed))
            ack = self.app.consumer.ack
            for message in ready:
                ack(message)

    async def _send_stats(self, producer: AIOKafkaProducer, changed: list[tuple[str, tuple[int, int]]],
                          now_ms: int) -> list[asyncio.Future[Any]]:
        # Hand-encoded and batched per partition: publishing ~500 links through fastavro and
        # send() held the event loop, and so every click, for ~15 ms once a second.
        header = self._stats_codec.header
        batches: dict[int, BatchBuilder] = {}
        sent: list[asyncio.Future[Any]] = []
        for link_id, (human, bot) in changed:
            key = link_id.encode()
            try:
                value = encode_link_stats(header, link_id, human, bot, now_ms)
            except Unsupported:
                value = self._stats_codec.encode(link_stats_record(link_id, (human, bot), now_ms))
            partition = self._stats_partition_of(key)
            full = _append(producer, batches, partition, key, value)
            if full is not None:
                sent.append(await producer.send_batch(full, self.stats_topic, partition=partition))
        for partition, batch in batches.items():
            sent.append(await producer.send_batch(batch, self.stats_topic, partition=partition))
        return sent

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        revoked: set[TP] = args[0]
        # Faust has waited for our acks and committed; publish what is left, then forget.
        self._stats_ready.clear()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        await self.publish_stats()
        partitions = _partitions_of(self.raw_topic, revoked)
        self.velocity.drop(partitions)
        self.counts.drop(partitions)

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        assigned: set[TP] = args[0]
        # Totals as the previous owners left them (they publish on revocation, before this runs).
        self._stats_ready.clear()
        if _partitions_of(self.raw_topic, assigned):
            self.counts.rebase(await read_totals(self.settings.common))
        self._stats_ready.set()


def _append(producer: AIOKafkaProducer, batches: dict[int, BatchBuilder], partition: int, key: bytes,
            value: bytes) -> BatchBuilder | None:
    """Append a record to its partition's open batch; return the batch it filled (to send now), if any.

    Record batches built here rather than record by record through send(): a send() costs ~10 us
    and a future per record.
    """
    batch = batches.get(partition)
    if batch is None:
        batch = batches[partition] = producer.create_batch()
    if batch.append(key=key, value=value, timestamp=None) is not None:
        return None
    batches[partition] = fresh = producer.create_batch()
    if fresh.append(key=key, value=value, timestamp=None) is None:
        raise RuntimeError(f"a record of {len(value)} bytes exceeds the producer's batch size")
    return batch


def _partitions_of(topic: str, tps: Iterable[TP]) -> set[int]:
    return {tp.partition for tp in tps if tp.topic == topic}
