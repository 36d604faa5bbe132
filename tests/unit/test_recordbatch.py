"""clickwire.recordbatch: Kafka record batches written directly. Every batch is read back with
aiokafka's own reader (the one its consumer uses), CRC included."""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest
from aiokafka.codec import zstd_encode
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.util import calc_crc32c

from clickwire.recordbatch import NONE, ZSTD, RecordBatch, RecordBatcher

TS = 1_790_000_000_000


def _batch(codec: int = ZSTD) -> RecordBatch:
    return RecordBatch(codec, zstd_encode if codec == ZSTD else None, calc_crc32c)


def _writer(partition: Any, max_bytes: int = 1 << 20) -> RecordBatcher:
    return RecordBatcher(partition, max_bytes, ZSTD, zstd_encode, calc_crc32c)


def _read(batch: RecordBatch) -> DefaultRecordBatch:
    read = DefaultRecordBatch(bytes(batch._build()))
    assert read.validate_crc()
    return read


@pytest.mark.parametrize("codec", [NONE, ZSTD])
def test_a_batch_reads_back_with_its_records_timestamps_and_producer_state(codec: int) -> None:
    """Offsets count from 0; a timestamp before the first (a negative delta) reads back too."""
    records = [(f"link{i % 3}".encode(), (b"click %d " % i) * (i % 50)) for i in range(300)]
    stamps = [TS + i // 7 for i in range(300)]
    stamps[5] = TS - 3
    batch = _batch(codec)
    for (key, value), ts in zip(records, stamps, strict=True):
        batch.append(key, value, ts)
    batch._set_producer_state(4711, 3, 12_345)  # what aiokafka's idempotent sender does before building
    read = _read(batch)
    assert read.compression_type == codec
    assert (read.producer_id, read.producer_epoch, read.base_sequence) == (4711, 3, 12_345)
    assert read.last_offset_delta == 299
    assert (read.first_timestamp, read.max_timestamp) == (TS, max(stamps))
    got = [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in read]
    assert got == [(i, key, value, ts, []) for i, ((key, value), ts) in enumerate(zip(records, stamps, strict=True))]
    assert batch.records() == records
    assert batch._build() is batch._build()  # built once: a retry sends the same bytes
    assert batch.record_count() == 300
    assert batch.closed()


def test_records_that_do_not_compress_go_uncompressed_and_long_ones_read_back() -> None:
    """Values past 4,096 bytes and offsets past 4,096 take the general varint path."""
    batch = _batch(ZSTD)
    noise = [os.urandom(n) for n in (0, 1, 63, 64, 4095, 4096, 70_000)]
    for value in noise:
        batch.append(b"k", value, TS)
    read = _read(batch)
    assert read.compression_type == NONE  # random bytes: zstd would only add
    assert [r.value for r in read] == noise
    many = _batch(ZSTD)
    for i in range(5000):
        many.append(b"k", b"%d" % i, TS)
    assert [(r.offset, r.value) for r in _read(many)] == [(i, b"%d" % i) for i in range(5000)]
    assert _read(many).compression_type == ZSTD


def test_the_writer_groups_by_partition_in_order_and_splits_full_batches() -> None:
    """Batches come out in the order they were opened; a batch closes once it reaches max_bytes."""
    writer = _writer(lambda key: int(key[-1:]), max_bytes=2000)
    records = [(b"link%d" % (i % 3), b"v%04d" % i + b"." * 95) for i in range(100)]
    for key, value in records:
        writer.add(key, value, TS)
    batches = writer.batches()
    assert [p for p, _ in batches[:3]] == [0, 1, 2]
    assert all(batch.closed() for _, batch in batches)
    for partition in range(3):
        mine = [batch for p, batch in batches if p == partition]
        assert len(mine) > 1  # ~34 records of ~110 bytes do not fit in 2,000
        assert all(2000 <= b.size() < 2000 + 120 for b in mine[:-1])
        assert [r for b in mine for r in b.records()] == [(k, v) for k, v in records if int(k[-1:]) == partition]
        for b in mine:
            assert [(r.key, r.value) for r in _read(b)] == b.records()
    assert writer.batches() == []


def test_a_record_larger_than_a_batch_goes_alone() -> None:
    writer = _writer(lambda key: 0, max_bytes=1000)
    writer.add(b"k", b"a" * 10, TS)
    writer.add(b"k", b"b" * 5000, TS)
    writer.add(b"k", b"c" * 10, TS)
    assert [b.records() for _, b in writer.batches()] == [[(b"k", b"a" * 10), (b"k", b"b" * 5000)], [(b"k", b"c" * 10)]]


def test_take_pops_exactly_n_and_encodes_each() -> None:
    queue: collections.deque[tuple[bytes, Any]] = collections.deque((b"link%d" % (i % 2), i) for i in range(10))
    asked: list[bytes] = []

    def partition(key: bytes) -> int:
        asked.append(key)
        return 7 if key == b"link1" else 3

    writer = _writer(partition)
    writer.take(queue, 4, lambda item: b"<%d>" % item)
    writer.take(queue, 3, lambda item: b"<%d>" % item)
    assert list(queue) == [(b"link1", 7), (b"link0", 8), (b"link1", 9)]
    batches = writer.batches()
    assert [(p, b.records()) for p, b in batches] == [
        (3, [(b"link0", b"<0>"), (b"link0", b"<2>"), (b"link0", b"<4>"), (b"link0", b"<6>")]),
        (7, [(b"link1", b"<1>"), (b"link1", b"<3>"), (b"link1", b"<5>")]),
    ]
    assert sorted(asked) == [b"link0", b"link1"]  # the partition of a key is worked out once
