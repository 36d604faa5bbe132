"""An in-process API (real uvicorn on 127.0.0.1, real broker) shared by the module's tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from clickwire.destinations import DEFAULT_BLOCKLIST_PATH
from clickwire.kafka import ensure_topics
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.api.app import ApiServer
from services.api.context import ApiContext
from services.api.keys import new_key, publish_key
from services.api.settings import ApiSettings
from tests.conftest import drop_prefixed_topics


@dataclass
class RunningApi:
    """A started API process-in-a-task and what tests need to talk to it."""

    ctx: ApiContext
    url: str
    common: CommonSettings
    blocklist: Path

    async def token(self, workspace: str = "ws_test") -> str:
        """Mint an API key and wait until the API accepts it."""
        key, token = new_key(workspace, "test")
        await publish_key(self.common, self.ctx.producer, key)
        await until(lambda: self.ctx.keys.get(key.id) is not None, "key visible to the API")
        return token

    def client(self, token: str | None) -> httpx.AsyncClient:
        """An HTTP client for the API, authenticated when a token is given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    """Poll check until it holds; fail naming what was awaited after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def read_topic(common: CommonSettings, topic: Topic) -> list[tuple[str, bytes | None]]:
    """Every (key, value) on a topic right now, in partition order (reads up to the end offsets)."""
    physical = name(topic, common.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = (await consumer._client.fetch_all_metadata()).partitions_for_topic(physical) or set()
        tps = [TopicPartition(physical, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[str, bytes | None]] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend((r.key.decode(), r.value) for r in batch.get(tp, []) if r.key is not None)
        return out
    finally:
        await consumer.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(kafka_common: CommonSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningApi]:
    """A started API on a free port with topics of its own and a blocklist file the test may edit."""
    common = replace(kafka_common, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(common)
    blocklist = tmp_path_factory.mktemp("api") / "blocklist.txt"
    blocklist.write_text(DEFAULT_BLOCKLIST_PATH.read_text())
    settings = replace(ApiSettings.from_env({"CLICKWIRE_API_BLOCKLIST_POLL": "0.05"}), common=common,
                       blocklist_path=blocklist)
    ctx = ApiContext(settings)
    await ctx.start()
    server = ApiServer(ctx, "127.0.0.1", 0)
    try:
        await server.start()
        yield RunningApi(ctx=ctx, url=f"http://127.0.0.1:{server.port}", common=common, blocklist=blocklist)
    finally:
        await server.stop()
        await ctx.stop()
        await drop_prefixed_topics(common)


def problem(response: httpx.Response) -> dict[str, Any]:
    """The problem document of an error response (asserting its media type)."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body
