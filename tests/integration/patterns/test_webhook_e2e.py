"""End to end: enriched clicks -> patterns -> events.derived -> dispatcher -> a signed milestone webhook."""

from __future__ import annotations

import asyncio
import time

import pytest

from clickwire.topics import Topic
from services.dispatcher.cli import serve as serve_dispatcher
from services.dispatcher.signing import new_secret
from tests.integration.dispatcher.conftest import settings_for, subscription
from tests.integration.patterns.conftest import Kit, click, link
from tests.support.receiver import Receiver, wait_until

pytestmark = [pytest.mark.kafka]


async def test_milestone_reaches_a_subscribed_receiver_and_filters_apply(kit: Kit) -> None:
    """A subscription for milestone.reached on one campaign receives that campaign's milestone once, signed;
    a subscription for another campaign and one for clicks only receive no derived event."""
    ws = "ws_e2e"
    await kit.thresholds(ws, {"milestones": {"counts": [3], "entities": ["campaign"]}})
    receiver = await Receiver().start()
    other = await Receiver().start()
    secret, other_secret = new_secret(), new_secret()
    receiver.secrets.append(secret)
    other.secrets.append(other_secret)
    wanted = subscription("sub_ms", receiver.url, secret, workspace=ws, event_types=("milestone.reached",),
                          filters={"campaigns": ["launch"]})
    unwanted = subscription("sub_other", other.url, other_secret, workspace=ws,
                            event_types=("milestone.reached", "traffic.spike"), filters={"campaigns": ["other"]})
    clicks_only = subscription("sub_clicks", other.url, other_secret, workspace=ws, event_types=("click",),
                               filters={"campaigns": ["nothing-here"]})
    for sub in (wanted, unwanted, clicks_only):
        await kit_put(kit, sub)
    stop = asyncio.Event()
    dispatcher = asyncio.create_task(serve_dispatcher(settings_for(kit.common), "all", stop))
    try:
        await kit.start()
        lk = link(ws, campaign="launch")
        clicks = [click(lk) for _ in range(3)]
        await kit.clicks(clicks)
        await wait_until(lambda: len(receiver.events()) >= 1, timeout_s=30)
        received_wall = time.time() - time.monotonic() + receiver.accepted[0].at
        await asyncio.sleep(1.0)  # room for a wrong extra delivery to show up
        events = receiver.events()
        assert [(e["type"], e["data"]["milestone"]["entity_id"], e["data"]["milestone"]["threshold"])
                for e in events] == [("milestone.reached", "launch", 3)]
        assert all(r.verified for r in receiver.accepted)
        assert other.requests == []
        delay_ms = received_wall * 1000 - clicks[-1]["ts_ms"]
        print(f"\ndetection delay, click event time -> milestone webhook received: {delay_ms:.0f} ms")
        assert delay_ms < 10_000
    finally:
        stop.set()
        await asyncio.wait_for(dispatcher, 30)
        await receiver.stop()
        await other.stop()


async def kit_put(kit: Kit, sub: dict[str, object]) -> None:
    """Write a subscription record to webhooks.subscriptions."""
    from clickwire.codec import codec_for
    from clickwire.topics import name

    await kit.producer.send_and_wait(name(Topic.WEBHOOK_SUBSCRIPTIONS, kit.common.topic_prefix),
                                     codec_for(Topic.WEBHOOK_SUBSCRIPTIONS).encode(sub), key=str(sub["id"]).encode())
