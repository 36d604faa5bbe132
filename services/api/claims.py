"""Alias uniqueness across API processes without a database: first claim on links.claims wins.

The links topic is compacted and has no compare-and-set, so two API processes creating the same
domain/code at the same instant would both publish and the later write would silently replace the
earlier link. Instead each process first appends a claim to the single-partition ``links.claims``
topic (one partition = one total order every process sees the same way), then reads that
partition up to and including its own claim and decides:

1. the links table already holds the key: won only if it holds this very link;
2. otherwise walk the claims for the key in offset order; the first *live* claim holds the alias.
   A claim is live while it is younger than the grace period and its link was not deleted. A
   claim older than the grace period whose link never reached the links table was abandoned
   (its process died between claiming and publishing) and no longer blocks the alias.

Only the winner publishes the link, and it must do so within the claim timeout, which the grace
period exceeds by a wide margin, so every process reaches the same verdict for the same claims.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Counter

from clickwire.codec import codec_for
from clickwire.kafka import FETCH_MAX_WAIT_MS, stop_consumer_task
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

log = structlog.get_logger(__name__)
CLAIMS = Counter("clickwire_api_claims_total", "Alias claims decided by this process", ["outcome"])


class ClaimTimeout(Exception):
    """The claims partition did not reach our claim within the claim timeout."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim read back from the claims partition."""

    offset: int
    link_id: str
    claimant: str
    ts_ms: int


class ClaimBook:
    """Produces claims and follows the claims partition to decide who owns an alias."""

    def __init__(self, common: CommonSettings, producer: AIOKafkaProducer, instance_id: str, *,
                 link_at: Callable[[str], str | None], deleted: Callable[[str], bool],
                 timeout_s: float, grace_s: float) -> None:
        self._common = common
        self._producer = producer
        self._instance = instance_id
        self._link_at = link_at
        self._deleted = deleted
        self._timeout_s = timeout_s
        self._grace_ms = int(grace_s * 1000)
        self._topic = name(Topic.LINK_CLAIMS, common.topic_prefix)
        self._tp = TopicPartition(self._topic, 0)
        self._codec = codec_for(Topic.LINK_CLAIMS, common.schema_registry_url)
        self._claims: dict[str, list[Claim]] = {}
        self._next_offset = 0
        self._advanced = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_prune = time.monotonic()

    async def start(self) -> None:
        """Start following the claims partition from the oldest claim that can still matter."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._common.bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign([self._tp])
        # Claims older than the grace period are dead either way: skip the topic's 7 days of history.
        since = int(time.time() * 1000) - 2 * self._grace_ms
        found = await consumer.offsets_for_times({self._tp: max(0, since)})
        if found.get(self._tp) is not None:
            consumer.seek(self._tp, found[self._tp].offset)
        else:
            await consumer.seek_to_end(self._tp)
        self._next_offset = await consumer.position(self._tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer), name="follow-claims")

    async def stop(self) -> None:
        """Stop following."""
        await stop_consumer_task(self._task, self._consumer)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._add(record.offset, record.key, record.value)
            position = await consumer.position(self._tp)
            if position != self._next_offset:
                async with self._advanced:
                    self._next_offset = position
                    self._advanced.notify_all()
            self._prune()

    def _add(self, offset: int, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_key is None or raw_value is None:
            return
        try:
            record = self._codec.decode(raw_value)
        except Exception as exc:  # a bad claim must not stop every alias decision
            log.warning("undecodable claim skipped", offset=offset, error=f"{type(exc).__name__}: {exc}")
            return
        ts = record["ts_ms"]
        ts_ms = int(ts.timestamp() * 1000) if isinstance(ts, datetime) else int(ts)
        self._claims.setdefault(raw_key.decode(), []).append(
            Claim(offset=offset, link_id=record["link_id"], claimant=record["claimant"], ts_ms=ts_ms))

    def _prune(self) -> None:
        if time.monotonic() - self._last_prune < 10:
            return
        self._last_prune = time.monotonic()
        cutoff = int(time.time() * 1000) - 2 * self._grace_ms
        for key in list(self._claims):
            kept = [c for c in self._claims[key] if c.ts_ms >= cutoff]
            if kept:
                self._claims[key] = kept
            else:
                del self._claims[key]

    async def claim(self, domain: str, code: str, link_id: str, workspace_id: str) -> bool:
        """Claim domain/code for a link; True when this claim won and the caller must publish now."""
        key = f"{domain}/{code}"
        record = {"domain": domain, "code": code, "link_id": link_id, "workspace_id": workspace_id,
                  "claimant": self._instance, "ts_ms": int(time.time() * 1000)}
        started = time.monotonic()
        meta = await asyncio.wait_for(
            self._producer.send_and_wait(self._topic, self._codec.encode(record), key=key.encode(),
                                         partition=0),
            self._timeout_s)
        remaining = self._timeout_s - (time.monotonic() - started)
        try:
            async with self._advanced:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self._next_offset > meta.offset),
                                       max(0.01, remaining))
        except TimeoutError:
            CLAIMS.labels("timeout").inc()
            raise ClaimTimeout(f"claims partition did not reach offset {meta.offset}") from None
        won = self.decide(key, meta.offset, link_id)
        CLAIMS.labels("won" if won else "lost").inc()
        return won

    def decide(self, key: str, my_offset: int, link_id: str, now_ms: int | None = None) -> bool:
        """Whether the claim at my_offset holds the alias, given every claim read so far."""
        current = self._link_at(key)
        if current is not None:
            return current == link_id
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        holder: Claim | None = None
        for claim in self._claims.get(key, ()):
            if claim.offset > my_offset:
                break
            if holder is not None and self._live(holder, now_ms):
                continue
            holder = claim if claim.offset == my_offset or self._live(claim, now_ms) else None
        return holder is not None and holder.offset == my_offset

    def _live(self, claim: Claim, now_ms: int) -> bool:
        return now_ms - claim.ts_ms < self._grace_ms and not self._deleted(claim.link_id)
