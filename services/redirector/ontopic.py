"""Reading back what is already on the clicks topic, so the publisher never re-sends a written click.

After a failed send round the broker may have written some of the round's batches and lost only the
acknowledgements. :func:`find_click_ids` reads each partition from the offset after the publisher's
last acknowledged batch up to its current end and reports which of the candidate click ids are
there. Both helpers use a short-lived consumer without a group: nothing is committed, and no group
coordinator is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from clickwire.kafka import make_consumer
from clickwire.settings import CommonSettings


def click_id_of(value: bytes, header_len: int) -> str | None:
    """The click id of an encoded raw click (its first field), or None when `value` is not one.

    The body after the Avro single-object header starts with ``click_id``: a zigzag-varint length
    then UTF-8 bytes. Decoding only that field keeps the read-back cheap.
    """
    n = shift = 0
    pos = header_len
    while True:
        if pos >= len(value) or shift > 63:
            return None
        b = value[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    length = (n >> 1) ^ -(n & 1)
    if length < 0 or pos + length > len(value):
        return None
    try:
        return value[pos:pos + length].decode()
    except UnicodeDecodeError:
        return None


async def _consumer(common: CommonSettings, timeout_s: float) -> AIOKafkaConsumer:
    timeout_ms = max(1000, int(timeout_s * 1000))
    consumer = make_consumer(common, group_id=None, request_timeout_ms=timeout_ms,
                             metadata_max_age_ms=timeout_ms, max_poll_records=10_000)
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise
    return consumer


async def end_offsets(common: CommonSettings, topic: str, partitions: Collection[int],
                      timeout_s: float) -> dict[int, int]:
    """Each partition's end offset (read_committed: the last stable offset)."""
    consumer = await _consumer(common, timeout_s)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        return {tp.partition: int(off) for tp, off in ends.items()}
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()


async def find_click_ids(common: CommonSettings, topic: str, starts: Mapping[int, int],
                         candidates: Collection[str], header_len: int,
                         timeout_s: float) -> tuple[set[str], dict[int, int]]:
    """Which `candidates` are on `topic` between `starts` and the current ends; and those ends.

    Raises TimeoutError (or a KafkaError/OSError) when the broker does not let us read it all in
    time: the caller must then assume nothing and try again later.
    """
    consumer = await _consumer(common, timeout_s)
    try:
        return await asyncio.wait_for(_scan(consumer, topic, starts, candidates, header_len), timeout_s)
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()


async def _scan(consumer: AIOKafkaConsumer, topic: str, starts: Mapping[int, int],
                candidates: Collection[str], header_len: int) -> tuple[set[str], dict[int, int]]:
    tps = [TopicPartition(topic, p) for p in starts]
    ends = {tp.partition: int(off) for tp, off in (await consumer.end_offsets(tps)).items()}
    consumer.assign(tps)
    todo: list[TopicPartition] = []
    for tp in tps:
        if starts[tp.partition] < ends[tp.partition]:
            consumer.seek(tp, starts[tp.partition])
            todo.append(tp)
        else:
            consumer.pause(tp)  # nothing of ours can be there: do not fetch it
    found: set[str] = set()
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=200)
        for records in batches.values():
            for record in records:
                if record.value is None:
                    continue
                cid = click_id_of(record.value, header_len)
                if cid is not None and cid in candidates:
                    found.add(cid)
        # Compare positions, not the last offset seen: compacted or aborted ranges leave gaps.
        still: list[TopicPartition] = []
        for tp in todo:
            if await consumer.position(tp) < ends[tp.partition]:
                still.append(tp)
            else:
                consumer.pause(tp)
        todo = still
    return found, ends
