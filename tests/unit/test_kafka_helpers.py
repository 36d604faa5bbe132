"""clickwire.kafka.key_partitioner (the one key -> partition choice every hand-batching producer uses)
and orchestrate.ServiceSpec's command line."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from clickwire.kafka import key_partitioner
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
