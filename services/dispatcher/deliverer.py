"""The deliverer: webhooks.outbox (and webhooks.retry) -> signed HTTP POSTs, in order per subscription.

Per subscription a :class:`~services.dispatcher.lanes.Lane` sends one request (or one batch) at a
time in outbox order; lanes run concurrently, so one slow or failing endpoint delays only itself.
A lane that must wait long, or whose backlog outgrows ``lane_max``, is parked in the retry topic
(services.dispatcher.parking). Outbox offsets are committed only below the oldest record not yet
finished (delivered, dead-lettered, dropped or safely parked). docs/delivery.md explains the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from prometheus_client import Counter, Gauge, Histogram

from clickwire.codec import CodecError, codec_for
from clickwire.deadletter import DeadLetters, InvalidMessage
from clickwire.kafka import PAUSING_FETCH_MAX_WAIT_MS, make_consumer
from clickwire.logs import RateLimited
from clickwire.topics import Topic, name
from services.dispatcher.attempts import AttemptLog
from services.dispatcher.avro import Unsupported, decode_delivery, fast_header
from services.dispatcher.filters import EventFacts
from services.dispatcher.lanes import Item, Lane, OffsetTracker
from services.dispatcher.parking import Parking, RetryPartition, now_ms
from services.dispatcher.payload import rfc3339_ms, webhook_disabled_event
from services.dispatcher.retry import classify
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.signing import HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign
from services.dispatcher.subscriptions import Subscription, Subscriptions, live_secrets
from services.dispatcher.transport import VettedTransport

log = structlog.get_logger(__name__)

USER_AGENT = "clickwire-webhooks/1"
_NEVER_MS = 2**63
_BATCH_NAMESPACE = uuid.UUID("0b9f7c52-3f4e-4a4e-8d0c-5a2b8e7d1c33")  # fixed: batch ids must be stable

DELIVERIES = Counter("clickwire_webhook_deliveries_total", "Deliveries finished, by outcome", ["outcome"])
ATTEMPTS = Counter("clickwire_webhook_attempts_total", "HTTP attempts, by outcome", ["outcome"])
LATENCY = Histogram("clickwire_webhook_attempt_seconds", "HTTP attempt latency",
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BUFFERED = Gauge("clickwire_webhook_buffered", "Deliveries held in memory across lanes")
PARKED = Gauge("clickwire_webhook_parked_lanes", "Subscriptions whose backlog is parked in the retry topic")
FORWARDED = Counter("clickwire_webhook_parked_total", "Outbox records moved to the retry topic")
# Bound once: labels() is a lock and a dict lookup, paid per delivery otherwise.
_DELIVERED_OK = DELIVERIES.labels("success")
_ATTEMPTS_BY_KIND = {kind: ATTEMPTS.labels(kind) for kind in ("success", "retry", "dead", "disabled")}


def batch_id(event_ids: list[str]) -> str:
    """Return the webhook-id of a batch: a function of its event ids, so every retry of it carries the same."""
    return "bat_" + uuid.uuid5(_BATCH_NAMESPACE, "\x1f".join(event_ids)).hex


def _header(raw_headers: tuple[tuple[bytes, bytes], ...], wanted: bytes) -> str | None:
    for key, value in raw_headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._deliverer._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._deliverer._assigned(assigned)


class Deliverer:
    """Consumes the outbox and the retry topic and delivers each subscription's events in order."""

    def __init__(self, settings: DispatcherSettings, subs: Subscriptions, producer: AIOKafkaProducer,
                 transport: VettedTransport, *, rng: random.Random | None = None) -> None:
        common = settings.common
        self._settings = settings
        self._subs = subs
        self._producer = producer
        self._transport = transport
        self._rng = rng or random.Random()  # jitter, not security
        prefix = common.topic_prefix
        self.outbox_topic = name(Topic.WEBHOOK_OUTBOX, prefix)
        self.retry_topic = name(Topic.WEBHOOK_RETRY, prefix)
        self._dead_topic = name(Topic.WEBHOOK_DEAD, prefix)
        self._subs_topic = name(Topic.WEBHOOK_SUBSCRIPTIONS, prefix)
        self.group_id = f"{prefix}clickwire-deliverer"
        self._codec = codec_for(Topic.WEBHOOK_OUTBOX, common.schema_registry_url)
        self._fast_header = fast_header(self._codec)
        self._sub_codec = codec_for(Topic.WEBHOOK_SUBSCRIPTIONS, common.schema_registry_url)
        self._attempts = AttemptLog(common, producer)
        self._dead_letters = DeadLetters(common, producer, "dispatcher")
        self.parking = Parking(producer, self.retry_topic, self._codec, settings.lane_max,
                               self._forwarded, self._fail)
        self.lanes: dict[str, Lane] = {}
        self.trackers: dict[int, OffsetTracker] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._to_setup: set[TopicPartition] = set()
        self._recovery_paused: set[TopicPartition] = set()
        self._pressure_paused = False
        self._committed: dict[TopicPartition, int] = {}
        self._fatal: BaseException | None = None
        self._stopping = False
        self._log_limit = RateLimited(5.0)
        self.max_buffered_seen = 0
        self.delivered = 0
        self.attempt_count = 0
        # Successes not yet added to the Prometheus counters (added at each commit, not per delivery).
        self._unreported_ok = 0
        self._unreported_ok_attempts = 0
        subs.listen(self._sub_changed)

    # -- health ------------------------------------------------------------------------------------------

    def buffered(self) -> int:
        """Deliveries held in memory across every lane."""
        return sum(len(lane.queue) for lane in self.lanes.values())

    def health(self) -> dict[str, object]:
        """The deliverer's state for /health."""
        return {
            "ok": self._fatal is None,
            "lanes": len(self.lanes),
            "buffered": self.buffered(),
            "delivered": self.delivered,
            "max_buffered": self.max_buffered_seen,
            "attempts": self.attempt_count,
            **self.parking.stats(),
        }

    # -- the consumer loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then finish requests in flight and commit what is done."""
        consumer = make_consumer(self._settings.common, group_id=self.group_id,
                                 partition_assignment_strategy=(RangePartitionAssignor,),
                                 max_poll_records=2000,
                                 fetch_max_wait_ms=PAUSING_FETCH_MAX_WAIT_MS)
        # Range assignment gives partition p of the outbox and of the retry topic (same count) to the
        # same member, so a subscription's parked records are read by the process that parked them.
        consumer.subscribe([self.outbox_topic, self.retry_topic], listener=_Rebalance(self))
        self._consumer = consumer
        await consumer.start()
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                if self._fatal is not None:
                    raise RuntimeError("a Kafka send failed; stopping so uncommitted work is redone") from self._fatal
                await self._setup_assigned(consumer)
                self._apply_seeks(consumer)
                self._release_recovered(consumer)
                self._backpressure(consumer)
                batches = await consumer.getmany(timeout_ms=50, max_records=2000)
                for tp, records in batches.items():
                    if tp.topic == self.outbox_topic:
                        for r in records:
                            await self._on_outbox(r)
                    else:
                        for r in records:
                            await self._on_retry(r)
                if time.monotonic() - last_commit >= 0.2:
                    await self._commit(consumer)
                    last_commit = time.monotonic()
        finally:
            await self._drain(consumer)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        self._stopping = True
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        for lane in self.lanes.values():
            lane.wake.set()
        if tasks:
            # Requests in flight finish (bounded by the total timeout); queued ones are redone after restart.
            _, pending = await asyncio.wait(tasks, timeout=self._settings.total_timeout_s + 1)
            for task in pending:
                task.cancel()
        with contextlib.suppress(Exception):
            await self._attempts.flush()
            await self._producer.flush()
            await self._commit(consumer)
        await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets: dict[TopicPartition, int] = {}
        for p, tracker in self.trackers.items():
            at = tracker.committable()
            tp = TopicPartition(self.outbox_topic, p)
            if at is not None and self._committed.get(tp) != at and tp not in self._to_setup:
                offsets[tp] = at
        for p, rp in self.parking.partitions.items():
            tp = TopicPartition(self.retry_topic, p)
            if tp in self._to_setup:
                continue
            at = rp.committable()
            if self._committed.get(tp) != at:
                offsets[tp] = at
        self._report_ok()
        if offsets:
            await consumer.commit(offsets)
            self._committed.update(offsets)
        buffered = self.buffered()
        self.max_buffered_seen = max(self.max_buffered_seen, buffered)
        BUFFERED.set(buffered)
        PARKED.set(self.parking.stats()["parked_lanes"])

    def _report_ok(self) -> None:
        if self._unreported_ok or self._unreported_ok_attempts:
            _DELIVERED_OK.inc(self._unreported_ok)
            _ATTEMPTS_BY_KIND["success"].inc(self._unreported_ok_attempts)
            self._unreported_ok = self._unreported_ok_attempts = 0

    def decode(self, value: bytes) -> dict[str, Any]:
        """Decode an outbox or retry record (hand-written fast path, the codec for anything else)."""
        if self._fast_header is not None:
            try:
                return decode_delivery(self._fast_header, value)
            except Unsupported:
                pass
        return self._codec.decode(value)

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        # No awaits here: positions are looked up by the loop; until then the partitions stay paused.
        for tp in assigned:
            if tp.topic == self.outbox_topic:
                self.trackers[tp.partition] = OffsetTracker()
            self._to_setup.add(tp)
        if self._consumer is not None and assigned:
            self._consumer.pause(*assigned)

    async def _setup_assigned(self, consumer: AIOKafkaConsumer) -> None:
        if not self._to_setup:
            return
        todo, self._to_setup = self._to_setup, set()
        retry = [tp for tp in todo if tp.topic == self.retry_topic]
        ends = await consumer.end_offsets(retry) if retry else {}
        for tp in retry:
            position = await consumer.position(tp)
            self.parking.partitions[tp.partition] = RetryPartition(tp.partition, position, ends[tp])
            self._committed[tp] = position
            consumer.resume(tp)
        for tp in todo:
            if tp.topic == self.outbox_topic:
                # Held until the retry partition's records from before we took over are read: they tell
                # which subscriptions are parked, whose new records must queue behind them.
                self._recovery_paused.add(tp)

    def _release_recovered(self, consumer: AIOKafkaConsumer) -> None:
        for tp in list(self._recovery_paused):
            rp = self.parking.partitions.get(tp.partition)
            if rp is not None and not rp.recovering:
                self._recovery_paused.discard(tp)
                if not self._pressure_paused:
                    consumer.resume(tp)

    def _apply_seeks(self, consumer: AIOKafkaConsumer) -> None:
        for p, rp in self.parking.partitions.items():
            if rp.seek_to is not None:
                target = rp.seek_to
                consumer.seek(TopicPartition(self.retry_topic, p), target)
                rp.seeked(target)

    def _backpressure(self, consumer: AIOKafkaConsumer) -> None:
        # Lanes park above lane_max, so this only trips with very many lanes each just under it.
        buffered = self.buffered()
        self.max_buffered_seen = max(self.max_buffered_seen, buffered)
        outbox = [TopicPartition(self.outbox_topic, p) for p in self.trackers]
        if not self._pressure_paused and buffered > self._settings.max_buffered:
            self._pressure_paused = True
            consumer.pause(*outbox)
        elif self._pressure_paused and buffered <= self._settings.max_buffered // 2:
            self._pressure_paused = False
            consumer.resume(*[tp for tp in outbox if tp not in self._recovery_paused])

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit(self._consumer)
        partitions = {tp.partition for tp in revoked}
        for sub_id, lane in list(self.lanes.items()):
            if lane.partition in partitions:
                if lane.task is not None:
                    lane.task.cancel()
                del self.lanes[sub_id]
        for tp in revoked:
            if tp.topic == self.outbox_topic:
                self.trackers.pop(tp.partition, None)
            else:
                self.parking.partitions.pop(tp.partition, None)
            self._to_setup.discard(tp)
            self._recovery_paused.discard(tp)
            self._committed.pop(tp, None)

    def _fail(self, exc: BaseException) -> None:
        self._fatal = exc

    # -- records in ------------------------------------------------------------------------------------

    def _lane(self, sub_id: str, partition: int) -> Lane:
        lane = self.lanes.get(sub_id)
        if lane is None:
            lane = self.lanes[sub_id] = Lane(sub_id, partition)
        return lane

    async def _invalid(self, record: Any, exc: Exception) -> None:
        await self._dead_letters.send(InvalidMessage(
            record.topic, record.partition, record.offset, record.key, record.value or b"",
            type(exc).__name__, str(exc)))

    async def _on_outbox(self, record: Any) -> None:
        tracker = self.trackers.get(record.partition)
        if tracker is None:
            return
        tracker.add(record.offset)
        try:
            delivery = self.decode(record.value)
            sub_id = delivery["subscription_id"]
        except (CodecError, TypeError, KeyError) as exc:
            await self._invalid(record, exc)
            tracker.done(record.offset)
            return
        item = Item(delivery, record.value, "outbox", record.partition, record.offset, time.monotonic(), tracker)
        lane = self._lane(sub_id, record.partition)
        if lane.parked:
            await self.parking.forward(lane, item)
            FORWARDED.inc()
            return
        lane.push(item)
        self._ensure_runner(lane)
        if len(lane.queue) > self._settings.lane_max:
            # The endpoint is slower than its traffic: keep memory bounded by moving the backlog out.
            await self.parking.park(lane, lane.take_all())
            FORWARDED.inc(self._settings.lane_max)

    async def _on_retry(self, record: Any) -> None:
        rp = self.parking.partitions.get(record.partition)
        if rp is None or record.key is None:
            return
        offset = record.offset
        fresh = offset >= rp.high
        rp.pos = offset + 1
        if fresh:
            rp.high = offset + 1
        sub_id = record.key.decode()
        lane = self.lanes.get(sub_id)
        if lane is None or not lane.parked:
            if not fresh:
                return  # delivered before a seek brought the reader back here
            # Parked before this process owned the partition (or before a restart): park the lane so
            # its new outbox records queue behind this one.
            lane = self._lane(sub_id, record.partition)
            lane.parked, lane.parked_from, lane.retry_next = True, offset, offset
            rp.lanes.add(lane)
        if not self.parking.take(lane, offset, time.time()):
            return
        try:
            delivery = self.decode(record.value)
        except CodecError as exc:
            await self._invalid(record, exc)
            return
        lane.push(Item(delivery, record.value, "retry", record.partition, offset, time.monotonic()))
        self._ensure_runner(lane)

    def _sub_changed(self, sub_id: str, sub: Subscription | None) -> None:
        lane = self.lanes.get(sub_id)
        if lane is not None and sub is not None and sub.get("enabled", True):
            lane.disabled_reason = None
            lane.failing_since = None
        if lane is not None:
            lane.wake.set()

    # -- finishing ------------------------------------------------------------------------------------------

    def _forwarded(self, item: Item) -> None:
        if item.tracker is not None:
            item.tracker.done(item.offset)
        lane = self.lanes.get(str(item.delivery["subscription_id"]))
        if lane is not None:
            self.parking.unpark_if_drained(lane)

    def _finish_after(self, lane: Lane, item: Item, fut: asyncio.Future[Any]) -> None:
        """Mark ``item`` finished once ``fut`` (the attempt or dead-letter record) is acknowledged."""
        if item.origin == "retry":
            lane.acking.add(item.offset)

        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                self._fail(f.exception() or RuntimeError("send cancelled"))
                return
            if item.tracker is not None:
                item.tracker.done(item.offset)
            else:
                lane.acking.discard(item.offset)
                self.parking.unpark_if_drained(lane)

        fut.add_done_callback(done)

    def _drop(self, lane: Lane, item: Item) -> None:
        if item.tracker is not None:
            item.tracker.done(item.offset)
        DELIVERIES.labels("dropped").inc()

    async def _to_dead(self, lane: Lane, item: Item) -> None:
        fut = await self._producer.send(self._dead_topic, self._codec.encode(item.delivery),
                                        key=lane.sub_id.encode())
        self._finish_after(lane, item, fut)
        DELIVERIES.labels("dead").inc()

    # -- lanes ------------------------------------------------------------------------------------------------

    def _ensure_runner(self, lane: Lane) -> None:
        if lane.task is None and not self._stopping:
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"lane-{lane.sub_id}")

    async def _run_lane(self, lane: Lane) -> None:
        try:
            await self._lane_loop(lane)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one lane must stop the process, not silently stall the lane
            log.exception("lane failed", subscription=lane.sub_id)
            self._fail(exc)
        finally:
            lane.task = None
            if lane.parked:
                self.parking.unpark_if_drained(lane)

    async def _lane_loop(self, lane: Lane) -> None:
        settings = self._settings
        while lane.queue and not self._stopping:
            generation = lane.generation
            head = lane.queue[0]
            if head.origin == "retry" and head.event_id in lane.overrides:
                override = lane.overrides.pop(head.event_id)
                if override is None:  # delivered while it was being parked
                    lane.queue.popleft()
                    self._after_pop(lane)
                    continue
                head.retried(*override)
            sub = self._subs.get(lane.sub_id)
            if sub is None:
                # The router saw the subscription before our follower did, or it was deleted.
                now = time.monotonic()
                lane.unknown_since = lane.unknown_since or now
                if now - lane.unknown_since < settings.unknown_grace_s:
                    await asyncio.sleep(0.05)
                    continue
                for item in lane.take_all():
                    self._drop(lane, item)
                continue
            lane.unknown_since = None
            if not sub.get("enabled", True) or lane.disabled_reason is not None:
                item = lane.queue.popleft()
                await self._to_dead(lane, item)  # kept for replay once the subscription is enabled again
                self._after_pop(lane)
                continue
            wait = head.not_before_ms / 1000 - time.time()
            if wait > 0:
                if wait > settings.hold_max_s:
                    await self._long_wait(lane, head.attempts, head.not_before_ms)
                    return
                with contextlib.suppress(TimeoutError):
                    lane.wake.clear()
                    await asyncio.wait_for(lane.wake.wait(), wait)  # woken early by a state change
                continue
            # Single mode needs no collecting: skip a coroutine per delivery.
            batch = [head] if sub.get("mode", "single") != "batch" else await self._collect(lane, sub, generation)
            if batch and lane.generation == generation:
                await self._attempt(lane, sub, batch, generation)

    def _after_pop(self, lane: Lane) -> None:
        if lane.parked and lane.skipped and len(lane.queue) <= self._settings.lane_max // 2:
            self.parking.ready_again(lane)

    async def _collect(self, lane: Lane, sub: Mapping[str, Any], generation: int) -> list[Item]:
        """Return the next batch of a batch subscription: up to batch_max items (single mode sends the head)."""
        if lane.batch is not None and lane.batch[0] is lane.queue[0]:
            return lane.batch  # a failed batch is retried as it was, under the same webhook-id
        batch_max = max(1, int(sub.get("batch_max") or 100))
        deadline = lane.queue[0].received_at + max(0, int(sub.get("batch_ms") or 0)) / 1000
        while len(lane.queue) < batch_max and lane.generation == generation and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            lane.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wake.wait(), remaining)
        if lane.generation != generation or not lane.queue:
            return []
        now = now_ms()
        items: list[Item] = []
        for item in lane.queue:
            if len(items) >= batch_max or item.not_before_ms > now or item.event_id in lane.overrides:
                break
            items.append(item)
        lane.batch = items
        return items

    @staticmethod
    def _secrets(lane: Lane, sub: Subscription) -> list[str]:
        """The subscription's live secrets, kept per lane until the record changes or a secret expires."""
        now = int(time.time() * 1000)
        cached = lane.signing
        if cached is not None and cached[0] is sub and now < cached[1]:
            return cached[2]
        secrets = live_secrets(sub, now)
        expiries = [s["expires_ms"] for s in sub.get("secrets") or ()
                    if s.get("expires_ms") is not None and s["expires_ms"] > now]
        lane.signing = (sub, min(expiries, default=_NEVER_MS), secrets)
        return secrets

    async def _attempt(self, lane: Lane, sub: Subscription, batch: list[Item], generation: int) -> None:
        settings = self._settings
        attempt = batch[0].attempts + 1
        if sub.get("mode", "single") == "batch":
            body = b"[" + b",".join(item.delivery["body"] for item in batch) + b"]"
            msg_id = batch_id([item.event_id for item in batch])
        else:
            body, msg_id = batch[0].delivery["body"], batch[0].event_id
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "user-agent": USER_AGENT, HEADER_ID: msg_id,
                   HEADER_TIMESTAMP: str(timestamp),
                   HEADER_SIGNATURE: sign(self._secrets(lane, sub), msg_id, timestamp, body)}
        result: int | BaseException
        response, retry_after = b"", None
        lane.in_flight = batch
        started = time.perf_counter()
        try:
            exchange = await self._transport.post(sub["url"], body, headers)
            result, response = exchange.status, exchange.body
            retry_after = _header(exchange.raw_headers, b"retry-after")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure to deliver is an outcome to record, never a crash
            result = exc
        finally:
            lane.in_flight = None
        elapsed = time.perf_counter() - started
        now = time.time()
        outcome = classify(result, attempt=attempt, retry_after=retry_after, now=now, rng=self._rng,
                           policy=settings.retry)
        kind, reason = outcome.kind, None
        if kind == "success":
            lane.failing_since = None
        else:
            lane.failing_since = lane.failing_since or now
            if kind == "disabled":
                reason = f"endpoint answered {outcome.status} Gone"
            elif now - lane.failing_since >= settings.disable_after_s:
                kind = "disabled"
                reason = f"failing continuously since {rfc3339_ms(int(lane.failing_since * 1000))}"
        next_ms = int((now + (outcome.delay_s or 0)) * 1000) if kind == "retry" else None
        self.attempt_count += 1
        if kind == "success":
            self._unreported_ok_attempts += 1  # counted in bulk (_report_ok)
        else:
            _ATTEMPTS_BY_KIND[kind].inc()
        LATENCY.observe(elapsed)
        acks = [
            await self._attempts.record(
                event_id=item.event_id, subscription_id=lane.sub_id, attempt=attempt, status=outcome.status,
                latency_ms=elapsed * 1000, outcome=kind, error_class=outcome.error_class, response=response,
                next_attempt_ms=next_ms)
            for item in batch
        ]
        if isinstance(result, BaseException) and self._log_limit.allow(lane.sub_id):
            log.info("delivery attempt failed", subscription=lane.sub_id, attempt=attempt,
                     error_class=outcome.error_class, outcome=kind)

        if lane.generation != generation:
            # The lane was parked while this request was in flight: its copies in the retry topic are now
            # the records of truth; tell the lane what this attempt decided for them.
            for item in batch:
                lane.overrides[item.event_id] = None if kind != "retry" else (attempt, next_ms or 0)
            if kind == "success":
                self.delivered += len(batch)
                self._unreported_ok += len(batch)
            elif kind in ("dead", "disabled"):
                for item in batch:
                    item.delivery["attempt"] = attempt
                    fut = await self._producer.send(self._dead_topic, self._codec.encode(item.delivery),
                                                    key=lane.sub_id.encode())
                    del fut  # the parked copy is skipped; the dead copy is only a record for replay
                if kind == "disabled" and reason is not None:
                    await self._disable(lane, sub, reason)
            return

        if kind == "retry":
            for item in batch:
                item.retried(attempt, next_ms or 0)
            if outcome.delay_s is not None and outcome.delay_s > settings.hold_max_s:
                await self._long_wait(lane, attempt, next_ms or 0)
            return
        for item, ack in zip(batch, acks, strict=True):
            lane.queue.popleft()
            if kind == "success":
                self._finish_after(lane, item, ack)
            else:
                item.delivery["attempt"] = attempt  # the dead record says how many attempts were made
                await self._to_dead(lane, item)
        lane.batch = None
        if kind == "success":
            self.delivered += len(batch)
            self._unreported_ok += len(batch)
        if kind == "disabled" and reason is not None:
            await self._disable(lane, sub, reason)
        self._after_pop(lane)

    async def _long_wait(self, lane: Lane, attempts: int, not_before_ms: int) -> None:
        """The head must wait longer than hold_max: free the lane's memory until it is due."""
        resume_at = not_before_ms / 1000
        head = lane.queue[0]
        if not lane.parked:
            head.retried(attempts, not_before_ms)
            await self.parking.park(lane, lane.take_all(), resume_at)
        else:
            # Everything queued came from the retry topic, in order from the head: rewind the cursor
            # to the head and keep only its new attempt count in memory.
            for item in lane.batch or [head]:
                lane.overrides[item.event_id] = (attempts, not_before_ms)
            lane.take_all()
            lane.retry_next = head.offset
            lane.resume_at = resume_at
            lane.skipped = True  # the reader must come back for the head
        asyncio.get_running_loop().call_later(max(0.0, resume_at - time.time()), self._resume, lane)

    def _resume(self, lane: Lane) -> None:
        if self.lanes.get(lane.sub_id) is lane and lane.parked:
            self.parking.ready_again(lane)

    async def _disable(self, lane: Lane, sub: Subscription, reason: str) -> None:
        """Disable the subscription on its compacted topic and tell its workspace with webhook.disabled."""
        lane.disabled_reason = reason
        at = now_ms()
        record = {**sub, "enabled": False, "disabled_reason": reason, "updated_ms": at}
        ack = await self._producer.send(self._subs_topic, self._sub_codec.encode(record), key=lane.sub_id.encode())
        await ack
        event = webhook_disabled_event(record, reason, at_ms=at)
        facts = EventFacts(type="webhook.disabled", workspace_id=sub["workspace_id"], link_id="", domain="",
                           tags=(), campaign=None, is_click=False)
        for sid in self._subs.match(facts):
            if sid == lane.sub_id:
                continue
            delivery = {"event_id": event.id, "subscription_id": sid, "event_type": event.type,
                        "created_ms": event.created_ms, "body": event.body, "attempt": 0, "not_before_ms": 0}
            await self._producer.send(self.outbox_topic, self._codec.encode(delivery), key=sid.encode())
        log.warning("subscription disabled", subscription=lane.sub_id, reason=reason)
