"""Fixtures for the dispatcher's integration tests: a running dispatcher, receivers, record builders."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from clickwire.codec import codec_for
from clickwire.kafka import make_consumer, make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.dispatcher.cli import serve
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.signing import new_secret
from tests.support.receiver import Receiver


def settings_for(common: CommonSettings, **env: str) -> DispatcherSettings:
    """Dispatcher settings on the test's topics, allowing 127.0.0.1, with quick retries unless overridden."""
    base = {
        "CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap,
        "CLICKWIRE_TOPIC_PREFIX": common.topic_prefix,
        "CLICKWIRE_HOME": str(common.home),
        "CLICKWIRE_METRICS_PORT": "0",
        "CLICKWIRE_WEBHOOK_ALLOW_NETS": "127.0.0.1/32",
        "CLICKWIRE_DISPATCHER_RETRY_SCHEDULE": "0,0.05,0.1,0.2,0.3,0.5",
        "CLICKWIRE_DISPATCHER_RETRY_JITTER": "0",
        "CLICKWIRE_DISPATCHER_UNKNOWN_GRACE": "5",
    }
    base.update(env)
    return DispatcherSettings.from_env(base)


def partition_of(key: str, partitions: int = 6) -> int:
    """The partition Kafka's default partitioner gives ``key``."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def ids_on_one_partition(count: int, prefix: str = "sub") -> list[str]:
    """``count`` subscription ids that all hash to the same outbox partition."""
    found: list[str] = []
    target = None
    while len(found) < count:
        candidate = f"{prefix}_{uuid.uuid4().hex[:10]}"
        p = partition_of(candidate)
        if target is None:
            target = p
        if p == target:
            found.append(candidate)
    return found


def subscription(sub_id: str, url: str, secret: str, *, workspace: str = "ws1",
                 event_types: tuple[str, ...] = ("click",), filters: dict[str, Any] | None = None,
                 mode: str = "single", batch_max: int = 100, batch_ms: int = 1000,
                 secrets: list[dict[str, Any]] | None = None, enabled: bool = True) -> dict[str, Any]:
    """A webhook_subscription.avsc record."""
    now = int(time.time() * 1000)
    base_filters = {"link_ids": [], "domains": [], "tags": [], "campaigns": [], "countries": [],
                    "device_types": [], "referrer_classes": [], "include_bots": False, "bot_kinds": [],
                    "min_trust": None}
    base_filters.update(filters or {})
    return {
        "id": sub_id, "workspace_id": workspace, "url": url, "description": "", "event_types": list(event_types),
        "filters": base_filters, "mode": mode, "batch_max": batch_max, "batch_ms": batch_ms, "enabled": enabled,
        "disabled_reason": None, "secrets": secrets or [{"secret": secret, "expires_ms": None}],
        "created_ms": now, "updated_ms": now,
    }


def delivery(sub_id: str, seq: int, event_id: str | None = None) -> dict[str, Any]:
    """A webhook_delivery.avsc record with a small JSON body carrying ``seq``."""
    eid = event_id or f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"id": eid, "type": "click", "created_at": "2026-01-01T00:00:00.000Z",
                       "data": {"seq": seq}}, separators=(",", ":")).encode()
    return {"event_id": eid, "subscription_id": sub_id, "event_type": "click", "created_ms": int(time.time() * 1000),
            "body": body, "attempt": 0, "not_before_ms": 0}


@dataclass
class Kit:
    """What a dispatcher test needs: its topics, a producer, and helpers to feed and read topics."""

    common: CommonSettings
    producer: AIOKafkaProducer
    receivers: list[Receiver] = field(default_factory=list)

    async def receiver(self, **kwargs: Any) -> Receiver:
        """Start a receiver stopped at teardown."""
        r = await Receiver(**kwargs).start()
        self.receivers.append(r)
        return r

    async def put(self, topic: Topic, record: dict[str, Any] | None, key: str) -> None:
        """Produce one record (None: tombstone) and wait for the broker."""
        value = None if record is None else codec_for(topic).encode(record)
        await self.producer.send_and_wait(name(topic, self.common.topic_prefix), value, key=key.encode())

    async def put_many(self, topic: Topic, records: list[dict[str, Any]], key: str) -> None:
        """Produce many records without waiting for each."""
        codec = codec_for(topic)
        physical = name(topic, self.common.topic_prefix)
        for record in records:
            await self.producer.send(physical, codec.encode(record), key=key.encode())
        await self.producer.flush()

    async def read(self, topic: Topic, until: Callable[[list[dict[str, Any]]], bool],
                   timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Read a topic from the start until ``until(records)`` holds; fail at the deadline."""
        codec = codec_for(topic)
        consumer = make_consumer(self.common, name(topic, self.common.topic_prefix), group_id=None)
        await consumer.start()
        records: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout_s
            while not until(records):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{topic} did not reach the expected state: {len(records)} records")
                batch = await consumer.getmany(timeout_ms=100)
                records += [codec.decode(r.value) for rs in batch.values() for r in rs if r.value is not None]
        finally:
            await consumer.stop()
        return records


@dataclass
class Running:
    """A dispatcher running in this event loop."""

    health_port: int
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def health(self) -> dict[str, Any]:
        """GET /health."""
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{self.health_port}/health")
            result: dict[str, Any] = resp.json()
            return result


@pytest_asyncio.fixture(loop_scope="session")
async def kit(topics: CommonSettings) -> AsyncIterator[Kit]:
    """A producer on the test's topics and receivers stopped at teardown."""
    producer = make_producer(topics, linger_ms=2)
    await producer.start()
    k = Kit(topics, producer)
    try:
        yield k
    finally:
        await producer.stop()
        for r in k.receivers:
            await r.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def dispatcher(kit: Kit) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Start ``serve()`` with settings overrides; every dispatcher started is stopped at teardown."""
    started: list[Running] = []

    async def start(role: str = "deliverer", **env: str) -> Running:
        settings = settings_for(kit.common, **env)
        stop = asyncio.Event()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_ready(port: int) -> None:
            ready.set_result(port)

        task = asyncio.create_task(serve(settings, role, stop, on_ready))
        waiting: list[asyncio.Future[Any]] = [task, ready]
        done, _ = await asyncio.wait(waiting, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        running = Running(await ready, stop, task)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop.set()
        for running in started:
            await asyncio.wait_for(running.task, 30)


def new_sub(kit: Kit, url: str, **kwargs: Any) -> tuple[str, str, dict[str, Any]]:
    """A fresh subscription id, secret and record pointing at ``url``."""
    sub_id = kwargs.pop("sub_id", None) or f"sub_{uuid.uuid4().hex[:10]}"
    secret = new_secret()
    return sub_id, secret, subscription(sub_id, url, secret, **kwargs)
