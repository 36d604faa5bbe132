"""The patterns Faust app: clicks.enriched and links -> derived events on events.derived.

Agents (each at-least-once; Faust acks an event after the agent's iteration and flushes its
producer, table changelogs included, before committing offsets):

- ``observe`` on clicks.enriched (key = link id): the ``suspicious`` table per link (bot/low-trust
  bursts, IP and network hammering), and forwards each human click once per entity it belongs to
  (its link, its campaign, each tag) to the internal ``<app id>-entities`` topic keyed by entity,
  so a campaign's clicks from every partition meet in one place;
- ``aggregate`` on that topic: ``counts`` (milestones) and ``rates`` (spikes) per entity;
- ``links`` on the links topic (key = domain/code): ``link-state``, emitting link.blocked when a
  version flips ``blocked`` to true;
- ``checks`` on the internal ``<app id>-checks`` topic, partitioned like links: the destination
  checker's results, applied to ``link-state`` (link.destination_failing).

Tables are changelog-backed (``<app id>-<table>-changelog``), so a restarted or rebalanced worker
recovers them. Every state records the input offsets it has applied and skips anything at or
before them, so the clicks replayed after a crash are not counted twice. A derived event is
produced and acknowledged *before* the state that records it is written: a crash between the two
emits it again on replay with the same deterministic id (receivers dedupe on webhook-id).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import faust
import orjson
import structlog
from aiokafka.admin import NewTopic
from faust.types import TP, EventT, StreamT
from mode.utils.times import want_seconds
from prometheus_client import Counter, Histogram

from clickwire.codec import CodecError, codec_for
from clickwire.kafka import BULK_FETCH, key_partitioner
from clickwire.topics import Topic, name
from services.enricher.app import _App as FaustApp  # faust.App with a configurable fetch wait
from services.patterns import destinations as dest
from services.patterns import milestones, spikes, suspicious
from services.patterns.settings import PatternsSettings
from services.patterns.thresholds import ThresholdBook

log = structlog.get_logger(__name__)

DERIVED = Counter("clickwire_patterns_events_total", "Derived events produced", ["type"])
DELAY = Histogram("clickwire_patterns_detection_seconds", "Event time to derived event produced", ["type"],
                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300))
SEP = "\x1f"  # separates the parts of table keys: never in a workspace id, link id, campaign or tag


def _copy(value: Any) -> Any:
    # States are mutated then written back; a copy keeps the in-memory table equal to its
    # changelog when an emission fails half-way.
    return orjson.loads(orjson.dumps(value))


def _json_schema() -> faust.Schema:  # type: ignore[type-arg]
    return faust.Schema(key_serializer="json", value_serializer="json")


class PatternsApp:
    """The Faust app, its tables and the state the CLI's health check reads."""

    def __init__(self, settings: PatternsSettings, *, click_partitions: int, link_partitions: int) -> None:
        common = settings.common
        self.settings = settings
        self.thresholds = ThresholdBook()
        self._click_codec = codec_for(Topic.CLICKS_ENRICHED, common.schema_registry_url)
        self._link_codec = codec_for(Topic.LINKS, common.schema_registry_url)
        self._derived_codec = codec_for(Topic.EVENTS_DERIVED, common.schema_registry_url)
        self.derived_topic = name(Topic.EVENTS_DERIVED, common.topic_prefix)
        self.links_topic_name = name(Topic.LINKS, common.topic_prefix)
        self.link_partitions = link_partitions
        # The partition the API's producer put a link on (clickwire.kafka.key_partitioner, per key).
        self._link_partition = key_partitioner(list(range(link_partitions)))
        self.app = FaustApp(
            settings.faust_id,
            broker=[f"kafka://{host}" for host in common.kafka_bootstrap],
            autodiscover=False, key_serializer="raw", value_serializer="raw", web_enabled=False,
            store="memory://", datadir=str(settings.data_dir), consumer_auto_offset_reset="earliest",
            broker_commit_interval=settings.commit_interval_s, producer_linger=0.02, producer_acks=-1,
            producer_compression_type="zstd", topic_partitions=click_partitions, topic_replication_factor=1,
        )
        # Derived events are due within seconds, not milliseconds: read clicks in bulk (clickwire.kafka.BULK_FETCH)
        # and linger 20 ms on changelog and repartition writes, instead of a fetch and a send per click.
        self.app.fetch_wait_ms = settings.fetch_wait_ms
        self.app.fetch_min_bytes = BULK_FETCH["fetch_min_bytes"]
        clicks = self.app.topic(name(Topic.CLICKS_ENRICHED, common.topic_prefix), key_serializer="raw",
                                value_serializer="raw")
        links = self.app.topic(self.links_topic_name, key_serializer="raw", value_serializer="raw")
        self.entities = self.app.topic(f"{settings.faust_id}-entities", partitions=click_partitions,
                                       internal=True, key_serializer="raw", value_serializer="raw")
        self.checks = self.app.topic(f"{settings.faust_id}-checks", partitions=link_partitions,
                                     internal=True, key_serializer="raw", value_serializer="raw")
        self.suspicious = self.app.Table("suspicious", default=None, partitions=click_partitions,
                                         schema=_json_schema())
        self.counts = self.app.Table("counts", default=None, partitions=click_partitions, schema=_json_schema())
        self.rates = self.app.Table("rates", default=None, partitions=click_partitions, schema=_json_schema())
        self.link_state = self.app.Table("link-state", default=None, partitions=link_partitions,
                                         schema=_json_schema())
        # The links and checks agents both read-modify-write link-state around an awaited emission.
        self._link_lock = asyncio.Lock()
        self.app.agent(clicks, name="observe")(self._observe)
        self.app.agent(self.entities, name="aggregate")(self._aggregate)
        self.app.agent(links, name="links")(self._links)
        self.app.agent(self.checks, name="checks")(self._checks)
        self.emitted: dict[str, int] = {}
        self.last_probe: dict[str, float] = {}

    def internal_topics(self) -> list[NewTopic]:
        """Faust's own topics of this app (re-keyed streams, table changelogs), configured as Faust would."""
        topics = [self.entities, self.checks,
                  *(t.changelog_topic for t in (self.suspicious, self.counts, self.rates, self.link_state))]
        out = []
        for topic in topics:
            # The configs Faust itself creates the topic with (its Transport._topic_config).
            cleanup = sorted(p for p, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on)
            configs = {"cleanup.policy": ",".join(cleanup)} if cleanup else {}
            if topic.retention:
                configs["retention.ms"] = str(int(want_seconds(topic.retention) * 1000))
            configs.update({k: str(v) for k, v in (topic.config or {}).items()})
            out += [NewTopic(name, topic.partitions or self.app.conf.topic_partitions,
                             topic.replicas or self.app.conf.topic_replication_factor, topic_configs=configs)
                    for name in topic.topics]
        return out

    # ---- emission ------------------------------------------------------------------------------

    async def emit(self, event_type: str, event_id: str, workspace_id: str, created_ms: int, key: str,
                   data: Mapping[str, Any], *, entity_kind: str, entity_id: str,
                   link: Mapping[str, Any] | None = None, tags: Sequence[str] = (), campaign: str | None = None,
                   country: str = "", referrer_class: str = "") -> None:
        """Produce one derived event and wait until the broker has it."""
        now_ms = int(time.time() * 1000)
        record = {
            "event_id": event_id, "type": event_type, "workspace_id": workspace_id, "created_ms": created_ms,
            "detected_ms": now_ms, "entity_kind": entity_kind, "entity_id": entity_id,
            "link_id": link["id"] if link else "", "domain": link["domain"] if link else "",
            "tags": list(tags), "campaign": campaign, "country": country, "referrer_class": referrer_class,
            "data_json": orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode(),
        }
        fut = await self.app.producer.send(self.derived_topic, key.encode(), self._derived_codec.encode(record),
                                           None, None, None)
        await fut
        DERIVED.labels(event_type).inc()
        DELAY.labels(event_type).observe(max(0.0, (now_ms - created_ms) / 1000))
        self.emitted[event_type] = self.emitted.get(event_type, 0) + 1
        log.info("derived event", type=event_type, id=event_id, workspace=workspace_id, entity=entity_id,
                 delay_ms=now_ms - created_ms)

    # ---- clicks --------------------------------------------------------------------------------

    async def _observe(self, stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await self.observe(event)

    async def observe(self, event: EventT[bytes]) -> None:
        """One enriched click: the link's suspicious-traffic window, then forward it to its entities."""
        message = event.message
        try:
            click = self._click_codec.decode(message.value or b"")
        except CodecError as exc:
            log.warning("undecodable click skipped", partition=message.partition, offset=message.offset,
                        error=str(exc))
            return
        ws, link_id = click["workspace_id"], click["link_id"]
        if not ws or not link_id:
            return  # an orphan click (unknown code) belongs to no workspace
        th = self.thresholds.get(ws)
        link = {"id": link_id, "domain": click["domain"], "code": click["code"],
                "destination": click.get("destination"), "tags": list(click.get("tags") or ()),
                "campaign": click.get("campaign")}
        state = _copy(self.suspicious.get(link_id)) or suspicious.new_state()
        # A click replayed after a crash is not counted again here; it is forwarded again below
        # all the same (its first forward may not have reached the broker) and deduped there.
        if message.offset > state["off"]:
            state["off"] = message.offset
            found = suspicious.observe(state, click, th.suspicious)
            if found is not None:
                await self.emit("traffic.suspicious",
                                suspicious.suspicious_id(ws, link_id, found["window_start_ms"]),
                                ws, int(click["ts_ms"]), link_id,
                                suspicious.suspicious_data(state, found, th.suspicious, link),
                                entity_kind="link", entity_id=link_id, link=link, tags=link["tags"],
                                campaign=link["campaign"])
            self.suspicious[link_id] = state
        if click["is_bot"]:
            return
        forward = {"ws": ws, "ts": click["ts_ms"], "country": click.get("country") or "",
                   "ref": click.get("referrer_class") or "", "p": message.partition, "o": message.offset,
                   "link": link}
        entities = [("link", link_id)]
        if link["campaign"]:
            entities.append(("campaign", link["campaign"]))
        entities += [("tag", tag) for tag in link["tags"]]
        for kind, entity in entities:
            key = SEP.join((ws, kind, entity))
            await self.entities.send(key=key.encode(), value=orjson.dumps({**forward, "kind": kind, "id": entity}))

    async def _aggregate(self, stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await self.aggregate(event.key, event.value)

    async def aggregate(self, raw_key: Any, raw_value: Any) -> None:
        """One human click of one entity: count it (milestones), and rate it by country and referrer (spikes)."""
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        f = orjson.loads(raw_value)
        ws, kind, entity, ts = f["ws"], f["kind"], f["id"], int(f["ts"])
        th = self.thresholds.get(ws)
        link = f["link"] if kind == "link" else None
        campaign = f["link"]["campaign"] if kind in ("link", "campaign") else None
        tags = f["link"]["tags"] if kind == "link" else ([entity] if kind == "tag" else [])
        state = _copy(self.counts.get(key)) or milestones.new_state(ts)
        if not milestones.fresh(state, f["p"], f["o"]):
            return
        reached = milestones.count(state, th.milestones.counts)
        if kind in th.milestones.entities:
            for threshold in reached:
                await self.emit("milestone.reached", milestones.milestone_id(ws, kind, entity, threshold), ws, ts,
                                entity, milestones.milestone_data(kind, entity, threshold, state["n"], link, campaign),
                                entity_kind=kind, entity_id=entity, link=link, tags=tags, campaign=campaign)
                state["emitted"].append(threshold)
        self.counts[key] = state
        if kind not in th.spikes.entities:
            return
        for dimension in th.spikes.dimensions:
            value = f["country"] if dimension == "country" else f["ref"]
            if not value:
                continue
            rate_key = SEP.join((key, dimension, value))
            rate = _copy(self.rates.get(rate_key)) or spikes.new_state(th.spikes)
            if not milestones.fresh(rate, f["p"], f["o"]):
                continue
            found = spikes.observe(rate, ts, th.spikes, state["first"])
            if found is not None:
                await self.emit("traffic.spike", spikes.spike_id(ws, kind, entity, dimension, value, ts), ws, ts,
                                entity, spikes.spike_data(kind, entity, dimension, value, found, th.spikes, link,
                                                          campaign),
                                entity_kind=kind, entity_id=entity, link=link, tags=tags, campaign=campaign,
                                country=value if dimension == "country" else "",
                                referrer_class=value if dimension == "referrer_class" else "")
            self.rates[rate_key] = rate

    # ---- links and destination checks ----------------------------------------------------------

    async def _links(self, stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await self.link_record(event.key, event.value)

    async def link_record(self, raw_key: Any, raw_value: Any) -> None:
        """A version (or tombstone) of a link: keep its state, report it when it becomes blocked."""
        if raw_key is None:
            return
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        async with self._link_lock:
            if raw_value is None:
                if self.link_state.get(key) is not None:
                    del self.link_state[key]
                return
            try:
                link = self._link_codec.decode(raw_value)
            except CodecError as exc:
                log.warning("undecodable link skipped", key=key, error=str(exc))
                return
            state, became_blocked = dest.link_changed(_copy(self.link_state.get(key)), link)
            if became_blocked:
                ws = link["workspace_id"]
                await self.emit("link.blocked", dest.blocked_id(ws, link["id"], link["updated_ms"]), ws,
                                link["updated_ms"], link["id"], dest.blocked_data(link), entity_kind="link",
                                entity_id=link["id"], link=link, tags=link.get("tags") or (),
                                campaign=link.get("campaign"))
            self.link_state[key] = state

    async def _checks(self, stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await self.check_result(orjson.loads(event.value))

    async def check_result(self, result: Mapping[str, Any]) -> None:
        """One destination check: count failures, report a run of them once."""
        key = result["key"]
        async with self._link_lock:
            state = _copy(self.link_state.get(key))
            if state is None or state["link"]["destination"] != result["destination"]:
                return  # deleted, or re-pointed since the check
            ws = state["workspace_id"]
            th = self.thresholds.get(ws)
            at = int(result["at"])
            probe = dest.Probe(result["ok"], int(result["status"]), result["error"])
            if dest.checked(state, probe, at, th.destinations.fail_after):
                link = state["link"]
                await self.emit("link.destination_failing", dest.failing_id(ws, link["id"], state["since"]), ws,
                                at, link["id"], dest.failing_data(state, at), entity_kind="link",
                                entity_id=link["id"], link=link, tags=link["tags"], campaign=link["campaign"])
            self.link_state[key] = state

    def _active(self, key: str) -> bool:
        # Each worker checks the links of the links partitions it owns, so links are checked once.
        tp = TP(self.links_topic_name, self._link_partition(key.encode()))
        return tp in self.app.assignor.assigned_actives()

    async def check_destinations(self, client: Any, stop: asyncio.Event) -> None:
        """Probe every due destination of this worker's links until ``stop``; results go to the checks topic."""
        interval = self.settings.check_interval_s
        limit = asyncio.Semaphore(self.settings.check_concurrency)

        async def one(key: str, url: str) -> None:
            async with limit:
                result = await dest.probe(client, url)
            if result.ok is None:
                return
            value = {"key": key, "destination": url, "ok": result.ok, "status": result.status,
                     "error": result.error, "at": int(time.time() * 1000)}
            await self.checks.send(key=key.encode(), value=orjson.dumps(value))

        while not stop.is_set():
            now = time.monotonic()
            due = []
            for key, state in list(self.link_state.items()):
                url = state["link"].get("destination") if state else None
                if not url or state["blocked"] or not self._active(key):
                    continue
                if now - self.last_probe.get(key, 0.0) >= interval:
                    self.last_probe[key] = now
                    due.append(one(key, url))
            if due:
                await asyncio.gather(*due, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(interval, 1.0))
