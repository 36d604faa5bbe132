"""Kafka helpers every service shares: readiness, topic bootstrap and checks, client factories.

Producers are idempotent with ``acks=all`` and zstd compression: together with idempotent
sinks downstream this gives at-least-once delivery with no duplicates from producer retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from clickwire.errors import BrokerUnavailable, TopicsMissing
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, TopicSpec, load_specs

TOPIC_ALREADY_EXISTS = 36


def _unavailable(settings: CommonSettings, timeout_s: float, why: str) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"CLICKWIRE_KAFKA_BOOTSTRAP={settings.bootstrap}: no Kafka broker answered a metadata "
        f"request within {timeout_s:g} s ({why})"
    )


@contextlib.asynccontextmanager
async def admin_client(settings: CommonSettings, timeout_s: float | None = None) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client that is known to talk to the cluster, closed on exit."""
    timeout_s = settings.kafka_connect_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    with _quiet_connection_errors():
        admin = await _connect(settings, timeout_s, deadline)
    try:
        yield admin
    finally:
        await admin.close()


@contextlib.contextmanager
def _quiet_connection_errors() -> Iterator[None]:
    # While polling for readiness every refused connection is expected; aiokafka would log each
    # one at ERROR and bury the single line that says what is wrong.
    logger = logging.getLogger("aiokafka")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


async def _connect(settings: CommonSettings, timeout_s: float, deadline: float) -> AIOKafkaAdminClient:
    why = "no answer"
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap,
            request_timeout_ms=max(1000, int(timeout_s * 1000)),
            client_id="clickwire-admin",
        )
        try:
            remaining = deadline - time.monotonic()
            await asyncio.wait_for(admin.start(), timeout=max(0.1, remaining))
            await asyncio.wait_for(admin.describe_cluster(), timeout=max(0.1, deadline - time.monotonic()))
            break
        except (KafkaError, OSError, TimeoutError) as exc:
            why = type(exc).__name__
            await admin.close()
            if time.monotonic() >= deadline:
                raise _unavailable(settings, timeout_s, why) from None
            # Poll again shortly: the broker may still be binding its port.
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    return admin


async def wait_for_broker(settings: CommonSettings, timeout_s: float | None = None) -> dict[str, Any]:
    """Return cluster metadata once a broker answers; raise BrokerUnavailable after the deadline."""
    async with admin_client(settings, timeout_s) as admin:
        cluster: dict[str, Any] = await admin.describe_cluster()
        return cluster


def _specs(topics: Iterable[Topic] | None) -> list[TopicSpec]:
    specs = load_specs()
    return [specs[t] for t in (topics if topics is not None else specs)]


async def ensure_topics(settings: CommonSettings, topics: Iterable[Topic] | None = None,
                        *, partitions_override: int | None = None) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created."""
    return await create_topics(settings, [
        NewTopic(s.physical(settings.topic_prefix), partitions_override or s.partitions, s.replication_factor,
                 topic_configs=s.configs())
        for s in _specs(topics)
    ])


async def create_topics(settings: CommonSettings, topics: list[NewTopic]) -> list[str]:
    """Create those of ``topics`` that do not exist yet, wait until the broker describes them, and
    return the names created (another process creating one at the same time is fine)."""
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        new = [t for t in topics if t.name not in existing]
        if not new:
            return []
        response = await admin.create_topics(new)
        created = []
        for entry in response.topic_errors:
            topic, code = entry[0], entry[1]
            if code == 0:
                created.append(topic)
            elif code != TOPIC_ALREADY_EXISTS:  # another process won the race: fine
                message = entry[2] if len(entry) > 2 else ""
                raise TopicsMissing(f"could not create topic {topic}: error {code} {message}")
        await _wait_topics_visible(admin, [t.name for t in new])
        return created


async def _wait_topics_visible(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        ready = {t["topic"] for t in described if t["error_code"] == 0 and t["partitions"]}
        if ready >= set(names):
            return
        if time.monotonic() > deadline:
            raise TopicsMissing(f"topics not visible after creation: {sorted(set(names) - ready)}")
        await asyncio.sleep(0.05)


async def check_topics(settings: CommonSettings, topics: Iterable[Topic]) -> dict[str, int]:
    """Verify each topic exists with at least its declared partitions; return name -> partitions."""
    wanted = _specs(topics)
    names = [s.physical(settings.topic_prefix) for s in wanted]
    async with admin_client(settings) as admin:
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
    found: dict[str, int] = {}
    problems = []
    for s, n in zip(wanted, names, strict=True):
        entry = described.get(n)
        if entry is None or entry["error_code"] != 0:
            problems.append(f"{n} is missing")
            continue
        found[n] = len(entry["partitions"])
        if found[n] < s.partitions:
            problems.append(f"{n} has {found[n]} partitions, {s.partitions} declared")
    if problems:
        raise TopicsMissing(
            "; ".join(problems) + " (run `clickwire stack up` or create them from deploy/topics.toml)"
        )
    return found


# How long a stream processor's producer keeps a record it could not deliver yet (aiokafka's batch
# TTL is its request timeout): the Java client's delivery.timeout.ms default. A broker restart under
# load takes longer than the 30 s default, and an expired batch would stop the processor.
STREAM_DELIVERY_TIMEOUT_MS = 120_000


def make_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all, zstd-compressed producer (not started)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "zstd",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


# How long the broker may hold a fetch that finds nothing new. It answers as soon as a record arrives
# (fetch_min_bytes 1), so this only paces idle polling: 50 ms waits in every consumer of a pipeline
# kept the broker at 45% of a core with no traffic at all; 500 ms (Kafka's default) at 14%.
# Except in a consumer that pauses some of its partitions (flow control): aiokafka then fetches the
# others alone, and a long wait on quiet ones delays the resumed ones by as much (PAUSING_FETCH_MAX_WAIT_MS).
FETCH_MAX_WAIT_MS = 500
PAUSING_FETCH_MAX_WAIT_MS = 20
# Readers off the click -> webhook path (the ClickHouse sink, the patterns service, the dashboard) let
# the broker gather records for them: one fetch per 64 KB or 100 ms instead of one per record. At
# 300 clicks/s, one fetch per record for every reader cost as much broker CPU as 1,000 clicks/s.
# (250 ms added half a second to derived events: the patterns service reads its own repartition
# topic too, and a quiet topic always waits the full time.)
BULK_FETCH: dict[str, int] = {"fetch_min_bytes": 64 * 1024, "fetch_max_wait_ms": 100}


def key_partitioner(partitions: list[int]) -> Callable[[bytes], int]:
    """The producers' own key -> partition choice (murmur2, like the Java client's), remembered per key.

    aiokafka works it out in pure Python for every record; keys (links, subscriptions) repeat, so a
    cache saves that per record. A partition count change needs a restart, as for Faust.
    """
    partitioner = DefaultPartitioner()
    return lru_cache(maxsize=1 << 18)(lambda key: int(partitioner(key, partitions, partitions)))


def make_consumer(settings: CommonSettings, *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with manual commits, reading from the earliest offset when the group is new (not started)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 2000,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of a topic, for a started consumer that will ``assign()`` them itself."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        # A consumer without a subscription starts with no topic metadata at all: ask for it.
        partitions = (await consumer._client.fetch_all_metadata()).partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions or ())]


async def stop_consumer_task(task: asyncio.Task[None] | None, consumer: AIOKafkaConsumer | None) -> None:
    """Cancel a background consuming task, wait for it to end, then close its consumer."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if consumer is not None:
        await consumer.stop()
