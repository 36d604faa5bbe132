"""Bounded memory: one subscription down while 100,000 of its events flow through the outbox."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from clickwire.codec import codec_for
from clickwire.kafka import make_consumer
from clickwire.topics import Topic, name
from services.dispatcher.signing import new_secret
from tests.integration.dispatcher.conftest import Kit, delivery, ids_on_one_partition, partition_of, subscription
from tests.support.receiver import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 100_000


def rss_mb() -> float:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def committed(kit: Kit, group: str, topic: str, partition: int) -> int:
    """The group's committed offset on one partition (-1 when none)."""
    consumer = make_consumer(kit.common, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, partition)) or -1
    finally:
        await consumer.stop()


async def test_a_down_subscription_is_parked_not_buffered(kit: Kit, dispatcher: Any) -> None:
    """A down endpoint's 100k events are parked in the retry topic: memory stays flat, B keeps flowing."""
    down, up = await kit.receiver(status=500), await kit.receiver()
    a_id, b_id = ids_on_one_partition(2)
    for sub_id, receiver in ((a_id, down), (b_id, up)):
        secret = new_secret()
        receiver.secrets = [secret]
        await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, subscription(sub_id, receiver.url, secret), sub_id)
    running = await dispatcher(CLICKWIRE_DISPATCHER_RETRY_SCHEDULE="0,1h", CLICKWIRE_DISPATCHER_LANE_MAX="1000")
    codec = codec_for(Topic.WEBHOOK_OUTBOX)
    outbox = name(Topic.WEBHOOK_OUTBOX, kit.common.topic_prefix)
    base = delivery(a_id, 0)
    before = rss_mb()
    started = time.monotonic()
    for i in range(EVENTS):
        record = {**base, "event_id": f"evt_a{i}"}
        await kit.producer.send(outbox, codec.encode(record), key=a_id.encode())
        if i % 1000 == 0:
            await kit.producer.send(outbox, codec.encode(delivery(b_id, i // 1000)), key=b_id.encode())
    await kit.producer.flush()

    await wait_until(lambda: len(up.events()) == EVENTS // 1000, timeout_s=60)
    health: dict[str, Any] = {}

    async def all_parked() -> bool:
        health.update((await running.health())["deliverer"])
        return bool(health["forwarded"] >= EVENTS - 1)

    deadline = time.monotonic() + 90
    while not await all_parked():
        assert time.monotonic() < deadline, health
    elapsed = time.monotonic() - started
    grown = rss_mb() - before
    print(f"\n100k parked in {elapsed:.1f}s, RSS +{grown:.0f} MB, max buffered {health['max_buffered']}")
    assert [e["data"]["seq"] for e in up.events()] == list(range(EVENTS // 1000))
    assert health["max_buffered"] <= 2 * 1000 + 1
    assert health["parked_lanes"] == 1
    assert grown < 60  # holding 100k deliveries as dicts would take several hundred MB
    assert len(down.requests) == 1  # the head failed once; its retry is an hour away
    # The outbox commit is not held back by A: it reaches the end of the shared partition.
    p = partition_of(a_id)
    end = EVENTS + EVENTS // 1000

    async def outbox_committed() -> bool:
        return await committed(kit, f"{kit.common.topic_prefix}clickwire-deliverer", outbox, p) >= end

    deadline = time.monotonic() + 10
    while not await outbox_committed():
        assert time.monotonic() < deadline
