"""The attempt log rides out a broker that does not take a batch, until the process is stopping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder

from clickwire.settings import CommonSettings
from services.dispatcher.attempts import AttemptLog


class AwayThenBackProducer:
    """send_batch times out ``away`` times (the previous batch is not drained), then is acknowledged."""

    def __init__(self, away: int) -> None:
        self.away = away
        self.calls = 0
        self.taken: list[tuple[int, int]] = []  # (partition, records)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16384, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.calls += 1
        if self.calls <= self.away:
            raise KafkaTimeoutError()
        self.taken.append((partition, batch.record_count()))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(f"p{partition}")
        return done


async def record(log: AttemptLog, n: int) -> asyncio.Future[Any]:
    return await log.record(event_id=f"evt_{n}", subscription_id="sub_1", attempt=1, status=204, latency_ms=1.0,
                            outcome="success", error_class=None)


async def test_a_batch_the_broker_does_not_take_yet_is_sent_again_not_failed() -> None:
    producer = AwayThenBackProducer(away=3)
    log = AttemptLog(CommonSettings.from_env({}), producer)
    acks = [await record(log, n) for n in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*acks), 5)
    assert len(set(results)) == 1  # one subscription: one partition, one batch
    assert producer.calls == 4
    assert producer.taken == [(producer.taken[0][0], 5)]


async def test_when_stopping_a_batch_the_broker_does_not_take_fails_its_records() -> None:
    producer = AwayThenBackProducer(away=100)
    log = AttemptLog(CommonSettings.from_env({}), producer)
    ack = await record(log, 1)
    await asyncio.wait_for(log.flush(), 5)
    with pytest.raises(KafkaTimeoutError):
        await ack
