"""The reference receiver: signatures verified, duplicates dropped (per batch element too), order checked."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks import Webhook

from clickwire.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def click(n: int, ts_ms: int) -> dict[str, object]:
    return {"id": f"evt_{n}", "type": "click", "created_at": "",
            "data": {"click": {"click_id": f"c{n}", "link_id": "lnk_1", "ts_ms": ts_ms}}}


@pytest_asyncio.fixture
async def client() -> AsyncIterator[tuple[TestClient, Receiver]]:
    receiver = Receiver([SECRET])
    async with TestClient(TestServer(receiver.app())) as c:
        yield c, receiver


async def post(c: TestClient, webhook_id: str, payload: object, secret: str = SECRET) -> int:
    body = orjson.dumps(payload)
    now = datetime.now(tz=UTC)
    signature = Webhook(secret).sign(webhook_id, now, body.decode())
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": signature, "content-type": "application/json"}
    response = await c.post("/all", data=body, headers=headers)
    return response.status


async def test_a_repeated_single_event_is_accepted_once(client: tuple[TestClient, Receiver]) -> None:
    c, receiver = client
    assert await post(c, "evt_1", click(1, 1000)) == 204
    assert await post(c, "evt_1", click(1, 1000)) == 204
    assert (receiver.stats.accepted, receiver.stats.duplicates) == (1, 1)


async def test_an_event_redelivered_in_another_batch_is_a_duplicate_not_a_disorder(
        client: tuple[TestClient, Receiver]) -> None:
    # At-least-once upstream: event 1 comes again, grouped with a newer event under another batch id.
    c, receiver = client
    assert await post(c, "bat_a", [click(1, 1000), click(2, 2000)]) == 204
    assert await post(c, "bat_b", [click(1, 1000), click(3, 3000)]) == 204
    assert receiver.stats.accepted == 3
    assert receiver.stats.duplicates == 1
    assert receiver.stats.out_of_order == 0
    assert receiver.stats.click_ids == {"c1", "c2", "c3"}


async def test_an_older_click_after_a_newer_one_is_out_of_order(client: tuple[TestClient, Receiver]) -> None:
    c, receiver = client
    await post(c, "evt_2", click(2, 2000))
    await post(c, "evt_1", click(1, 1000))
    assert receiver.stats.out_of_order == 1
    assert receiver.stats.disorders == [("all", "lnk_1", "c1", 1000, 2000)]


async def test_a_bad_signature_is_refused_and_not_counted(client: tuple[TestClient, Receiver]) -> None:
    c, receiver = client
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert await post(c, "evt_1", click(1, 1000), secret=other) == 401
    assert (receiver.stats.accepted, receiver.stats.bad_signatures) == (0, 1)
