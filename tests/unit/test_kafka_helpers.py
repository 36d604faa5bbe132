"""clickwire.kafka.key_partitioner (the one key -> partition choice every hand-batching producer uses),
fill_batch (records appended to aiokafka's compiled batch builder directly) and orchestrate.ServiceSpec's
command line."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from clickwire.kafka import fill_batch, key_partitioner
from clickwire.orchestrate import ServiceSpec

# murmur2 of these keys as the Java client's Utils.murmur2 returns them (Kafka's UtilsTest).
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829, b"abc": 479470107}


@pytest.mark.parametrize("count", [1, 3, 6, 7])
def test_key_partitioner_picks_what_the_java_client_picks(count: int) -> None:
    partition_of = key_partitioner(list(range(count)))
    for key, murmur in JAVA_MURMUR2.items():
        assert partition_of(key) == (murmur & 0x7FFFFFFF) % count, key


def test_key_partitioner_agrees_with_aiokafka_and_remembers_nothing_across_partition_counts() -> None:
    aiokafka_partitioner = DefaultPartitioner()
    six, three = list(range(6)), list(range(3))
    of_six, of_three = key_partitioner(six), key_partitioner(three)
    keys = [f"lnk_{i}".encode() for i in range(2000)]
    for _ in range(2):  # the second round is answered from the cache
        assert [of_six(k) for k in keys] == [aiokafka_partitioner(k, six, six) for k in keys]
        assert [of_three(k) for k in keys] == [aiokafka_partitioner(k, three, three) for k in keys]
    assert {of_six(k) for k in keys} == set(six)


def test_a_service_runs_its_name_unless_it_names_a_command() -> None:
    assert ServiceSpec("sink", "http://127.0.0.1:1/health").argv == ("sink",)
    router = ServiceSpec("router", "http://127.0.0.1:1/health", command=("dispatcher", "--role", "router"))
    assert router.argv == ("dispatcher", "--role", "router")


@pytest.mark.parametrize("compression", [0, 4])  # none, zstd (the redirector's)
def test_fill_batch_appends_until_full_and_the_batch_reads_back(compression: int) -> None:
    """Records go in in order from `start`; a full batch stops it and is closed; offsets count from 0."""
    records = [(f"k{i}".encode(), bytes([i]) * 300) for i in range(10)]
    first = BatchBuilder(1000, compression)
    stop = fill_batch(first, records, 2)
    assert 3 <= stop - 2 < 8  # a few 300-byte records fit in 1,000 bytes, not all eight
    assert first.append(key=b"x", value=b"y", timestamp=None) is None  # closed
    rest = BatchBuilder(1 << 20, compression)
    assert fill_batch(rest, records, stop) == len(records)
    for batch, want in ((first, records[2:stop]), (rest, records[stop:])):
        read = [(r.offset, r.key, r.value) for r in DefaultRecordBatch(bytes(batch._build()))]
        assert read == [(i, key, value) for i, (key, value) in enumerate(want)]
