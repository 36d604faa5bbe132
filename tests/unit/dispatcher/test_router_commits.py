"""The router's commits: offsets become committable in batch order once acknowledged, and what is
acknowledged within one commit interval goes out as one commit; a drain commits the rest."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from clickwire.settings import CommonSettings
from services.dispatcher.router import Router
from services.dispatcher.subscriptions import Subscriptions


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def routed(router: Router, acks: list[asyncio.Future[Any]], offsets: dict[TopicPartition, int]) -> None:
    """What run() does after routing a batch."""
    router._acking.append(asyncio.create_task(router._ack_after(acks, offsets)))


async def test_acknowledged_batches_are_committed_together_in_order_and_drained() -> None:
    common = CommonSettings.from_env({})
    router = Router(common, Subscriptions(common), None, commit_interval_s=60)
    consumer = RecordingConsumer()
    router._consumer = consumer  # run() sets its consumer here
    tp0, tp1 = TopicPartition("clicks", 0), TopicPartition("clicks", 1)
    first_write: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    routed(router, [first_write], {tp0: 5})
    routed(router, [], {tp0: 9})
    routed(router, [], {tp1: 3})
    await asyncio.sleep(0.01)
    router._check_commits()
    router._maybe_commit()
    assert consumer.commits == []  # the later batches wait for the first one's write

    first_write.set_result(None)
    await asyncio.gather(*router._acking)
    router._check_commits()
    router._maybe_commit()
    await asyncio.sleep(0)
    assert consumer.commits == [{tp0: 9, tp1: 3}]  # three batches, one commit

    routed(router, [], {tp1: 4})
    await asyncio.gather(*router._acking)
    router._check_commits()
    router._maybe_commit()
    await asyncio.sleep(0)
    assert len(consumer.commits) == 1  # within the interval: not yet

    await router.drain_commits()
    assert consumer.commits == [{tp0: 9, tp1: 3}, {tp1: 4}]
