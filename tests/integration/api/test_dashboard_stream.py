"""A stopping API ends the dashboard's event streams instead of waiting out uvicorn's graceful timeout."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import httpx
import pytest

from clickwire.kafka import ensure_topics
from clickwire.settings import CommonSettings
from services.api.app import ApiServer
from services.api.context import ApiContext
from services.api.keys import new_key, publish_key
from services.api.settings import ApiSettings
from tests.integration.api.conftest import until

pytestmark = [pytest.mark.kafka]

# uvicorn's graceful timeout is 10 s: a stream still open at stop would hold the stop that long.
STOP_DEADLINE_S = 5.0


async def test_stop_ends_an_open_event_stream(kafka_common: CommonSettings) -> None:
    common = replace(kafka_common, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(common)
    ctx = ApiContext(replace(ApiSettings.from_env(), common=common))
    await ctx.start()
    server = ApiServer(ctx, "127.0.0.1", 0)
    await server.start()
    try:
        key, token = new_key("ws_stream", "test")
        await publish_key(common, ctx.producer, key)
        await until(lambda: ctx.keys.get(key.id) is not None, "key visible to the API")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            async def dashboard_ready() -> bool:
                return (await client.get("/v1/dashboard/snapshot")).status_code == 200

            await until(dashboard_ready, "dashboard following clicks", timeout_s=30)
            async with client.stream("GET", "/v1/dashboard/stream") as response:
                assert response.status_code == 200
                chunks = response.aiter_bytes()
                seen = b""
                while b"event: snapshot" not in seen:
                    seen += await asyncio.wait_for(chunks.__anext__(), 10)
                stopping = asyncio.create_task(server.stop())

                async def rest() -> None:
                    async for _ in chunks:
                        pass

                await asyncio.wait_for(rest(), STOP_DEADLINE_S)  # the stream ended
                await asyncio.wait_for(stopping, STOP_DEADLINE_S)
        assert server.done
    finally:
        await server.stop()
        await ctx.stop()
