"""The publisher's round encoding shares the event loop with the response path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch

from clickwire.recordbatch import ZSTD
from clickwire.settings import CommonSettings
from services.redirector import publisher as publisher_module
from services.redirector.publisher import ClickPublisher
from services.redirector.spool import Spool


async def test_a_large_round_lets_requests_in_between_slices_and_keeps_order(tmp_path: Path) -> None:
    """Encoding 3 slices' worth of clicks yields twice; each partition's records come out in submission order."""
    encoded: list[int] = []
    answered_during: list[int] = []

    def encode(click: int) -> bytes:
        encoded.append(click)
        return str(click).encode()

    publisher = ClickPublisher(CommonSettings.from_env({}), Spool(tmp_path / "s.spool", 1 << 20), encode=encode)
    publisher._batcher = publisher_module._batcher(lambda key: 0 if key == b"a" else 1)  # what connecting sets
    n = 3 * publisher_module.ENCODE_SLICE
    clicks: Any = [(b"a" if i % 3 else b"b", i) for i in range(n + 5)]  # the encoder here takes ints
    publisher._queue.extend(clicks)  # the last 5 wait for the next round

    async def request_arrives() -> None:  # what the loop runs between two slices
        while len(encoded) < n:
            answered_during.append(len(encoded))
            await asyncio.sleep(0)

    other = asyncio.create_task(request_arrives())
    await asyncio.sleep(0)  # let it start: it records 0, then waits for the loop
    batches = await publisher._encode_round(n)
    await other
    assert [partition for partition, _ in batches] == [1, 0]  # in order of first appearance
    assert all(batch.closed() for _, batch in batches)
    by_partition = {partition: batch.records() for partition, batch in batches}
    assert [(key, int(value)) for key, value in by_partition[0]] == [(b"a", i) for i in range(n) if i % 3]
    assert [(key, int(value)) for key, value in by_partition[1]] == [(b"b", i) for i in range(n) if not i % 3]
    assert publisher.queued == 5
    built = DefaultRecordBatch(bytes(batches[0][1]._build()))  # what the producer sends: zstd, readable
    assert built.compression_type == ZSTD
    assert [(r.key, int(r.value)) for r in built] == [(b"b", i) for i in range(n) if not i % 3]
    slices = publisher_module.ENCODE_SLICE
    assert answered_during[0] == 0
    assert slices in answered_during
    assert 2 * slices in answered_during
    assert all(count % slices == 0 for count in answered_during)  # never inside a slice
