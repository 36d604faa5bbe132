"""The Faust app: clicks.raw -> enrich -> clicks.enriched, velocity and per-link counter tables.

Delivery is at-least-once (Faust's exactly-once mode has open bugs, see the brief):

* the agent takes batches of events; each batch's enriched records are sent and their delivery
  awaited before Faust acks the events, and Faust flushes its producer before it commits offsets,
  so a committed offset always has its enriched records (and table changelogs) on the broker;
* a crash replays the clicks after the last commit: they are enriched and produced again
  (the ClickHouse sink dedups by click id) and counted again in link stats (see stats.py).

Tables (changelogs ``<app id>-velocity-changelog`` and ``<app id>-link-stats-changelog``, created
by Faust through the admin API, partitioned like clicks.raw): ``velocity`` is a tumbling window of
clicks per (IP, link), ``link-stats`` holds [human, bot] clicks per link. Faust derives a changelog
record's partition from the event being processed, so table writes happen with that event set
as the current one.

Faust's own web server is disabled; health and metrics come from clickwire's HealthServer (cli.py).
"""

from __future__ import annotations

import asyncio
import operator
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import faust
import faust.streams
import structlog
from aiokafka import AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT, StreamT, TransportT
from prometheus_client import Counter, Histogram

from clickwire.codec import codec_for
from clickwire.deadletter import DeadLetters, InvalidMessage
from clickwire.kafka import make_producer
from clickwire.topics import Topic, name, spec
from services.enricher.chain import Enricher
from services.enricher.links import LinkIndex
from services.enricher.settings import EnricherSettings
from services.enricher.stats import BatchCounts, link_stats_record
from services.enricher.stream import ClickStream, Source
from services.enricher.velocity import velocity_key

log = structlog.get_logger(__name__)

CLICKS = Counter("clickwire_enricher_clicks_total", "Clicks enriched and produced", ["kind"])
STATS_PUBLISHED = Counter("clickwire_enricher_link_stats_published_total", "link_stats records produced")
LAG = Histogram("clickwire_enricher_click_age_seconds", "Click timestamp to enrichment",
                buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60))
SERVICE = "enricher"


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500; aiokafka reads the attribute only in start().
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", 1500)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    """faust.App with a configurable consumer fetch wait."""

    fetch_wait_ms: int = 1500

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


class EnricherApp:
    """The Faust app of the enricher, its tables, and the state they share with the CLI."""

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
            broker_max_poll_records=max(500, settings.batch_size),
            stream_buffer_maxsize=max(4096, settings.batch_size * 4),
            producer_linger=0.005,
            producer_acks=-1,
            producer_compression_type="zstd",
            producer_max_batch_size=256 * 1024,
            topic_partitions=partitions,
            topic_replication_factor=raw_spec.replication_factor,
        )
        self.app.fetch_wait_ms = settings.fetch_wait_ms
        window = settings.velocity_window_s
        self.velocity = self.app.Table(
            "velocity", default=int, partitions=partitions, schema=_json_schema(),
        ).tumbling(window, expires=timedelta(seconds=2 * window)).relative_to_stream()
        self.stats = self.app.Table("link-stats", default=None, partitions=partitions, schema=_json_schema())
        self.stats.on_recover(self._on_stats_recovered)
        self.dirty: set[str] = set()
        self._dead_producer: AIOKafkaProducer | None = None
        self._dead_letters: DeadLetters | None = None
        self.enriched = 0
        self.invalid = 0
        source = self.app.topic(self.raw_topic, key_serializer="raw", value_serializer="raw")
        self.app.agent(source, name="enrich")(self._agent)
        self.app.timer(settings.stats_interval_s, name="publish-link-stats")(self.publish_stats)

    async def start_side_clients(self) -> None:
        """Start the dead-letter producer (call before the Faust worker starts)."""
        self._dead_producer = make_producer(self.settings.common, linger_ms=0)
        await self._dead_producer.start()
        self._dead_letters = DeadLetters(self.settings.common, self._dead_producer, SERVICE)

    async def stop_side_clients(self) -> None:
        """Stop the dead-letter producer."""
        if self._dead_producer is not None:
            await self._dead_producer.stop()

    async def _agent(self, stream: StreamT[bytes]) -> None:
        within = self.settings.batch_wait_ms / 1000
        async for events in stream.take_events(  # type: ignore[attr-defined]
                self.settings.batch_size, within=within):
            await self.handle(events)

    def _velocity_hit(self, raw: Mapping[str, Any]) -> int:
        window_set = self.velocity[velocity_key(raw)]
        window_set.apply(operator.add, 1)
        return int(window_set.current())

    async def handle(self, events: Sequence[EventT[bytes]]) -> None:
        """Enrich a batch; return once every enriched record of it is on the broker."""
        now_ms = int(time.time() * 1000)
        producer = self.app.producer
        pending = []
        counts = BatchCounts()
        event_of_link: dict[str, EventT[bytes]] = {}
        for event in events:
            message = event.message
            _set_current_event(event)
            src = Source(message.topic, message.partition, message.offset, message.key)
            try:
                out = self.stream.process(message.value, src, self.links.get, self._velocity_hit, now_ms=now_ms)
            except InvalidMessage as bad:
                await self._dead_letter(bad)
                continue
            pending.append(await producer.send(self.enriched_topic, out.key, out.value, None, None, None))
            counts.add(out.link_id, out.is_bot)
            event_of_link[out.link_id] = event
            LAG.observe(max(0.0, now_ms / 1000 - message.timestamp))
        for link_id, delta in counts.deltas.items():
            # Written with an event of the link's own partition: the changelog goes to that partition.
            _set_current_event(event_of_link[link_id])
            self.stats[link_id] = BatchCounts.merged(self.stats.get(link_id), delta)
            self.dirty.add(link_id)
            CLICKS.labels("human").inc(delta[0])
            CLICKS.labels("bot").inc(delta[1])
        if pending:
            await asyncio.gather(*pending)
        self.enriched += len(pending)

    async def _dead_letter(self, bad: InvalidMessage) -> None:
        self.invalid += 1
        if self._dead_letters is None:
            raise RuntimeError("start_side_clients() was not called") from bad
        await self._dead_letters.send(bad)

    async def publish_stats(self) -> None:
        """Publish the counters of every link that changed since the last call to links.stats."""
        if not self.dirty:
            return
        links, self.dirty = self.dirty, set()
        now_ms = int(time.time() * 1000)
        sent = []
        for link_id in links:
            counts = self.stats.get(link_id)
            if counts is None:  # the partition moved to another worker, which publishes it now
                continue
            value = self._stats_codec.encode(link_stats_record(link_id, counts, now_ms))
            sent.append((link_id, await self.app.producer.send(
                self.stats_topic, link_id.encode(), value, None, None, None)))
        for link_id, fut in sent:
            try:
                await fut
                STATS_PUBLISHED.inc()
            except Exception as exc:  # retried on the next tick
                self.dirty.add(link_id)
                log.warning("link stats not published", link_id=link_id, error=type(exc).__name__)

    async def _on_stats_recovered(self) -> None:
        # Recovered counts may be ahead of what was last published (crash between the two).
        self.dirty.update(str(k) for k in self.stats)


def _json_schema() -> faust.Schema[Any, Any]:
    return faust.Schema(key_serializer="json", value_serializer="json")


def _set_current_event(event: EventT[bytes]) -> None:
    # Faust picks a table changelog's partition from the stream's current event; in a batch we
    # process events one by one, so each becomes current in turn (as Faust does per event).
    faust.streams._current_event.set(weakref.ref(event))
