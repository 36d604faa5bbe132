"""The deliverer against the real broker and real receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from clickwire.topics import Topic
from services.dispatcher.signing import new_secret
from tests.integration.dispatcher.conftest import Kit, delivery, ids_on_one_partition, new_sub, subscription
from tests.support.receiver import wait_until

pytestmark = [pytest.mark.kafka]


def seqs(events: list[Any]) -> list[int]:
    """The ``seq`` of each received event."""
    return [e["data"]["seq"] for e in events]


async def test_order_holds_when_one_event_fails_four_times(kit: Kit, dispatcher: Any) -> None:
    """An event that fails four times is retried in place: the receiver sees every event once, in order."""
    receiver = await kit.receiver()
    sub_id, secret, sub = new_sub(kit, receiver.url)
    receiver.secrets = [secret]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, sub, sub_id)
    records = [delivery(sub_id, i) for i in range(30)]
    receiver.fail_ids[records[7]["event_id"]] = 4
    await dispatcher()
    await kit.put_many(Topic.WEBHOOK_OUTBOX, records, sub_id)

    await wait_until(lambda: len(receiver.events()) == 30)
    assert seqs(receiver.events()) == list(range(30))
    assert receiver.attempts_by_id()[records[7]["event_id"]] == 5
    assert all(r.verified for r in receiver.requests)
    attempts = await kit.read(Topic.WEBHOOK_ATTEMPTS, lambda rs: len(rs) >= 34)
    failing = [a for a in attempts if a["event_id"] == records[7]["event_id"]]
    assert [a["attempt"] for a in failing] == [1, 2, 3, 4, 5]
    assert [a["outcome"] for a in failing] == ["retry"] * 4 + ["success"]
    assert failing[0]["status"] == 500
    assert failing[0]["error_class"] == "http_status"


async def test_parked_backlog_resumes_in_order(kit: Kit, dispatcher: Any) -> None:
    """A backlog larger than the lane's window is parked in the retry topic and delivered later in order."""
    receiver = await kit.receiver()
    sub_id, secret, sub = new_sub(kit, receiver.url)
    receiver.secrets = [secret]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, sub, sub_id)
    records = [delivery(sub_id, i) for i in range(400)]
    receiver.fail_ids[records[0]["event_id"]] = 2
    running = await dispatcher(CLICKWIRE_DISPATCHER_LANE_MAX="40", CLICKWIRE_DISPATCHER_HOLD_MAX="0.1",
                               CLICKWIRE_DISPATCHER_RETRY_SCHEDULE="0,0.5,0.5,0.5")
    await kit.put_many(Topic.WEBHOOK_OUTBOX, records, sub_id)

    await wait_until(lambda: len(receiver.events()) == 400, timeout_s=30)
    assert seqs(receiver.events()) == list(range(400))
    health = await running.health()
    assert health["deliverer"]["forwarded"] >= 300
    assert health["deliverer"]["max_buffered"] <= 2 * 40 + 1


async def test_a_failing_subscription_does_not_slow_another_on_its_partition(kit: Kit, dispatcher: Any) -> None:
    """With subscription A hanging and failing, B on the same partition is delivered with low latency."""
    slow, fast = await kit.receiver(status=500, delay_s=2.0), await kit.receiver()
    a_id, b_id = ids_on_one_partition(2)
    for sub_id, receiver in ((a_id, slow), (b_id, fast)):
        secret = new_secret()
        receiver.secrets = [secret]
        await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, subscription(sub_id, receiver.url, secret), sub_id)
    await dispatcher(CLICKWIRE_DISPATCHER_RETRY_SCHEDULE="0,0.1,0.1,0.1,0.1,0.1,0.1,0.1")
    await kit.put_many(Topic.WEBHOOK_OUTBOX, [delivery(a_id, i) for i in range(200)], a_id)
    await wait_until(lambda: len(slow.requests) >= 1, timeout_s=10)

    latencies = []
    for i in range(40):
        record = delivery(b_id, i)
        sent = time.monotonic()
        await kit.put(Topic.WEBHOOK_OUTBOX, record, b_id)
        await wait_until(lambda eid=record["event_id"]: any(r.webhook_id == eid for r in fast.accepted), 5, 0.002)
        got = next(r for r in fast.accepted if r.webhook_id == record["event_id"])
        latencies.append(got.at - sent)
        await asyncio.sleep(0.01)  # pacing, not waiting for anything
    latencies.sort()
    assert seqs(fast.events()) == list(range(40))
    assert latencies[len(latencies) // 2] < 0.1, latencies
    assert latencies[-1] < 0.5, latencies
    assert len(slow.accepted) == 0
    assert len(slow.requests) <= 3


async def test_gone_disables_the_subscription_and_announces_it(kit: Kit, dispatcher: Any) -> None:
    """A 410 disables the subscription on its topic, sends webhook.disabled to the workspace, stops attempts."""
    gone, watcher = await kit.receiver(status=410), await kit.receiver()
    sub_id, secret, sub = new_sub(kit, gone.url)
    w_id, w_secret, w_sub = new_sub(kit, watcher.url, event_types=("webhook.disabled",))
    gone.secrets, watcher.secrets = [secret], [w_secret]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, sub, sub_id)
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, w_sub, w_id)
    await dispatcher()
    records = [delivery(sub_id, i) for i in range(3)]
    await kit.put_many(Topic.WEBHOOK_OUTBOX, records, sub_id)

    await wait_until(lambda: len(watcher.events()) == 1)
    event = watcher.events()[0]
    assert event["type"] == "webhook.disabled"
    assert event["data"]["webhook"]["id"] == sub_id
    assert "410" in event["data"]["reason"]
    subs = await kit.read(Topic.WEBHOOK_SUBSCRIPTIONS, lambda rs: any(not r["enabled"] for r in rs))
    disabled = [r for r in subs if r["id"] == sub_id and not r["enabled"]]
    assert disabled
    assert "410" in (disabled[-1]["disabled_reason"] or "")
    dead = await kit.read(Topic.WEBHOOK_DEAD, lambda rs: len(rs) >= 3)
    assert {d["event_id"] for d in dead} == {r["event_id"] for r in records}  # kept for replay
    assert len(gone.requests) == 1


async def test_retry_after_is_honoured(kit: Kit, dispatcher: Any) -> None:
    """A 429 with Retry-After: 1 delays the next attempt by about a second, not the 50 ms schedule."""
    receiver = await kit.receiver(retry_after=(1, "1"))
    sub_id, secret, sub = new_sub(kit, receiver.url)
    receiver.secrets = [secret]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, sub, sub_id)
    await dispatcher()
    await kit.put(Topic.WEBHOOK_OUTBOX, delivery(sub_id, 0), sub_id)

    await wait_until(lambda: len(receiver.accepted) == 1)
    first, second = receiver.requests[0], receiver.requests[1]
    assert first.status == 429
    assert second.status == 204
    assert 0.95 <= second.at - first.at < 3.0
    attempts = await kit.read(Topic.WEBHOOK_ATTEMPTS, lambda rs: len(rs) >= 2)
    assert attempts[0]["status"] == 429
    assert attempts[0]["next_attempt_ms"] >= attempts[0]["ts_ms"] + 950


async def test_rotation_signs_with_both_secrets_during_grace_then_only_the_new(kit: Kit, dispatcher: Any) -> None:
    """During the grace period both secrets verify; after the old one expires only the new one does."""
    old, new = new_secret(), new_secret()
    expires = int(time.time() * 1000) + 2500
    receiver = await kit.receiver(secrets=[new, old], require_all=True)
    sub_id, _, sub = new_sub(kit, receiver.url)
    sub["secrets"] = [{"secret": new, "expires_ms": None}, {"secret": old, "expires_ms": expires}]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, sub, sub_id)
    await dispatcher()
    await kit.put(Topic.WEBHOOK_OUTBOX, delivery(sub_id, 0), sub_id)
    await wait_until(lambda: len(receiver.accepted) == 1)
    during = receiver.accepted[0]
    assert len(during.signature.split(" ")) == 2

    await wait_until(lambda: time.time() * 1000 > expires + 10, timeout_s=5, interval_s=0.05)
    receiver.secrets, receiver.require_all = [new], False
    await kit.put(Topic.WEBHOOK_OUTBOX, delivery(sub_id, 1), sub_id)
    await wait_until(lambda: len(receiver.accepted) == 2)
    after = receiver.accepted[1]
    headers = {"webhook-id": after.webhook_id, "webhook-timestamp": after.timestamp,
               "webhook-signature": after.signature}
    Webhook(new).verify(after.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, headers)


async def test_internal_address_is_refused_at_delivery_time(kit: Kit, dispatcher: Any) -> None:
    """Without the allow-list, a subscription pointing at 127.0.0.1 gets no request and an ssrf attempt."""
    receiver = await kit.receiver()
    sub_id, secret, sub = new_sub(kit, receiver.url)
    receiver.secrets = [secret]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, sub, sub_id)
    await dispatcher(CLICKWIRE_WEBHOOK_ALLOW_NETS="", CLICKWIRE_DISPATCHER_RETRY_SCHEDULE="0,0.05")
    record = delivery(sub_id, 0)
    await kit.put(Topic.WEBHOOK_OUTBOX, record, sub_id)

    attempts = await kit.read(Topic.WEBHOOK_ATTEMPTS, lambda rs: len(rs) >= 2)
    assert [a["error_class"] for a in attempts] == ["ssrf", "ssrf"]
    assert [a["outcome"] for a in attempts] == ["retry", "dead"]
    dead = await kit.read(Topic.WEBHOOK_DEAD, lambda rs: len(rs) >= 1)
    assert dead[0]["event_id"] == record["event_id"]
    assert dead[0]["attempt"] == 2
    assert receiver.requests == []


async def test_batch_subscriptions_get_signed_json_arrays_in_order(kit: Kit, dispatcher: Any) -> None:
    """A batch subscription receives arrays of at most batch_max events, signed once, in outbox order."""
    receiver = await kit.receiver()
    sub_id, secret, sub = new_sub(kit, receiver.url, mode="batch", batch_max=10, batch_ms=300)
    receiver.secrets = [secret]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, sub, sub_id)
    await dispatcher()
    await kit.put_many(Topic.WEBHOOK_OUTBOX, [delivery(sub_id, i) for i in range(25)], sub_id)

    await wait_until(lambda: sum(len(r.json()) for r in receiver.accepted) == 25)
    bodies = [r.json() for r in receiver.accepted]
    assert all(isinstance(b, list) and 1 <= len(b) <= 10 for b in bodies)
    assert [e["data"]["seq"] for b in bodies for e in b] == list(range(25))
    assert len(bodies) <= 5
    assert all(r.webhook_id.startswith("bat_") and r.verified for r in receiver.accepted)
