"""Session fixtures: a real Kafka broker and the real ClickHouse engine.

Broker, in order of preference:
1. an existing broker when CLICKWIRE_KAFKA_BOOTSTRAP is set;
2. testcontainers' Kafka when CLICKWIRE_TEST_DOCKER=1 and Docker answers;
3. otherwise the local stack (real Apache Kafka from Maven Central) under .clickwire/test on
   port 19092, started for the session and stopped at its end if this session started it.

Tests that use the broker or ClickHouse must say so with ``@pytest.mark.kafka`` /
``@pytest.mark.clickhouse``; requesting the fixture without the marker fails the test, so the
unit suite can never quietly depend on a service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings

from clickwire.settings import REPO_ROOT, CommonSettings

TEST_HOME = Path(os.environ.get("CLICKWIRE_TEST_HOME", REPO_ROOT / ".clickwire" / "test"))
TEST_KAFKA_PORT = int(os.environ.get("CLICKWIRE_TEST_KAFKA_PORT", "19092"))

# Properties are about values, not speed: on a shared 2-core machine hypothesis's per-example deadline
# and its "generation too slow" check failed runs that found no counterexample.
settings.register_profile("clickwire", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("clickwire")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (CI's stop, `kill`) tears fixtures down like Ctrl-C, so brokers and services are stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(f"{request.node.nodeid} uses the {marker!r} fixture without @pytest.mark.{marker}")


def _docker_kafka() -> Iterator[str]:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
        yield container.get_bootstrap_server()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a real, running Kafka broker for the whole session."""
    if os.environ.get("CLICKWIRE_KAFKA_BOOTSTRAP"):
        yield os.environ["CLICKWIRE_KAFKA_BOOTSTRAP"]
        return
    if os.environ.get("CLICKWIRE_TEST_DOCKER") == "1":
        yield from _docker_kafka()
        return
    import asyncio

    from clickwire.stack import StackSettings, broker_status, down, start_broker

    stack = StackSettings.from_env({
        "CLICKWIRE_HOME": str(TEST_HOME),
        "CLICKWIRE_STACK_KAFKA_PORT": str(TEST_KAFKA_PORT),
        "CLICKWIRE_KAFKA_CONNECT_TIMEOUT": "10",
    })
    started_here = broker_status(stack) is None
    from clickwire.stack import fetch_jars

    fetch_jars(stack, print)
    asyncio.run(start_broker(stack))
    try:
        yield stack.common.bootstrap
    finally:
        if started_here:
            down(stack)


@pytest.fixture(scope="session")
def kafka_common(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> CommonSettings:
    """CommonSettings pointing at the session broker, with a scratch home."""
    return CommonSettings.from_env({
        "CLICKWIRE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CLICKWIRE_HOME": str(tmp_path_factory.mktemp("home")),
        "CLICKWIRE_KAFKA_CONNECT_TIMEOUT": "10",
    })


@pytest.fixture
def kafka(request: pytest.FixtureRequest, kafka_common: CommonSettings) -> CommonSettings:
    """The session broker's settings; only for tests marked ``kafka``."""
    _require_marker(request, "kafka")
    return kafka_common


@pytest_asyncio.fixture(loop_scope="session")
async def topics(kafka: CommonSettings) -> AsyncIterator[CommonSettings]:
    """Settings whose topic prefix is unique to this test, with every declared topic created."""
    from clickwire.kafka import ensure_topics

    settings = replace(kafka, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(settings)
    yield settings
    await drop_prefixed_topics(settings)


async def drop_prefixed_topics(settings: CommonSettings) -> None:
    """Delete every topic under the settings' (per-test) prefix, Faust's internal ones included.

    Without this a developer broker shared by many test runs collects thousands of partitions and
    eventually runs out of heap. Best effort: a failure here must not fail the test.
    """
    from clickwire.kafka import admin_client

    if not settings.topic_prefix:
        return
    with contextlib.suppress(Exception):
        async with admin_client(settings, timeout_s=5) as admin:
            mine = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
            if mine:
                await admin.delete_topics(mine)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def clickhouse_session(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """The embedded ClickHouse engine (or CLICKWIRE_CLICKHOUSE_URL's server) with migrations applied once."""
    from clickwire.clickhouse import apply_migrations, open_store

    store = await open_store(os.environ.get("CLICKWIRE_CLICKHOUSE_URL") or None, tmp_path_factory.mktemp("clickhouse"))
    await apply_migrations(store)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def clickhouse(request: pytest.FixtureRequest, clickhouse_session: object) -> object:
    """The session ClickHouse store; only for tests marked ``clickhouse``."""
    _require_marker(request, "clickhouse")
    return clickhouse_session
