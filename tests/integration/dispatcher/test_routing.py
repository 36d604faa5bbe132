"""The router end to end: enriched clicks and link changes -> filtered, signed webhooks."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from clickwire.kafka import make_consumer
from clickwire.topics import Topic, name, spec
from tests.integration.dispatcher.conftest import Kit, new_sub
from tests.support.receiver import wait_until

pytestmark = [pytest.mark.kafka]


def enriched(workspace: str, *, country: str = "DE", is_bot: bool = False, code: str = "c1") -> dict[str, Any]:
    """An enriched_click.avsc record."""
    now = int(time.time() * 1000)
    return {
        "click_id": str(uuid.uuid4()), "ts_ms": now, "link_id": f"l_{code}", "workspace_id": workspace,
        "domain": "clk.test", "code": code, "method": "GET", "user_agent": "Mozilla/5.0",
        "referer": None, "accept_language": "en", "purpose": None, "ch_ua": None, "ch_ua_mobile": None,
        "ch_ua_platform": None, "query": "", "qr": False, "status": 302, "destination": "https://example.com/",
        "redirector_id": "r1", "ip": "203.0.113.0", "tags": ["t"], "campaign": "spring",
        "utm_source": None, "utm_medium": None, "utm_campaign": None, "utm_term": None, "utm_content": None,
        "link_created_ms": now - 1000, "country": country, "region": "", "city": "", "latitude": None,
        "longitude": None, "asn": 3320, "as_org": "DTAG", "browser": "Firefox", "browser_version": "120",
        "os": "Linux", "os_version": "", "device_family": "Other", "device_type": "desktop",
        "referrer_host": "", "referrer_class": "direct", "is_bot": is_bot,
        "bot_kind": "crawler" if is_bot else "none", "bot_name": "", "trust_score": 20 if is_bot else 100,
        "trust_signals": [], "visitor_hash": "v", "enriched_ms": now,
    }


def link(workspace: str, code: str, *, created_ms: int, updated_ms: int, tags: list[str]) -> dict[str, Any]:
    """A link.avsc record."""
    return {
        "id": f"l_{code}", "workspace_id": workspace, "domain": "clk.test", "code": code,
        "destination": "https://example.com/", "redirect_type": 302, "created_ms": created_ms,
        "updated_ms": updated_ms, "expires_ms": None, "expired_url": None, "max_clicks": None, "tags": tags,
        "campaign": None, "utm_source": None, "utm_medium": None, "utm_campaign": None, "utm_term": None,
        "utm_content": None, "rules": [], "bot_policy": "count", "preview_title": None,
        "preview_description": None, "preview_image": None, "destination_trust": 100, "destination_flags": [],
        "blocked": False,
    }


async def test_filters_route_clicks_and_link_events_to_the_right_subscriptions(kit: Kit, dispatcher: Any) -> None:
    """Country and bot filters pick clicks; link.created/updated/deleted follow the links topic in order."""
    ws = f"ws_{uuid.uuid4().hex[:6]}"
    germany, humans, links, other_ws = [await kit.receiver() for _ in range(4)]
    subs = [
        new_sub(kit, germany.url, workspace=ws, filters={"countries": ["DE"]}),
        new_sub(kit, humans.url, workspace=ws),
        new_sub(kit, links.url, workspace=ws, event_types=("link.created", "link.updated", "link.deleted"),
                filters={"tags": ["promo"]}),
        new_sub(kit, other_ws.url, workspace="someone-else"),
    ]
    for (sub_id, secret, record), receiver in zip(subs, (germany, humans, links, other_ws), strict=True):
        receiver.secrets = [secret]
        await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, record, sub_id)
    await dispatcher(role="all")

    de, us, bot = enriched(ws, country="DE"), enriched(ws, country="US"), enriched(ws, country="DE", is_bot=True)
    for click in (de, us, bot):
        await kit.put(Topic.CLICKS_ENRICHED, click, click["link_id"])
    t0 = int(time.time() * 1000)
    await kit.put(Topic.LINKS, link(ws, "p1", created_ms=t0, updated_ms=t0, tags=["promo"]), "clk.test/p1")
    await kit.put(Topic.LINKS, link(ws, "p1", created_ms=t0, updated_ms=t0 + 5, tags=["promo"]), "clk.test/p1")
    await kit.put(Topic.LINKS, link(ws, "n1", created_ms=t0, updated_ms=t0, tags=["other"]), "clk.test/n1")
    await kit.put(Topic.LINKS, None, "clk.test/p1")

    await wait_until(lambda: len(germany.events()) == 1 and len(humans.events()) == 2 and len(links.events()) == 3)
    assert germany.events()[0]["data"]["click"]["click_id"] == de["click_id"]
    assert {e["data"]["click"]["click_id"] for e in humans.events()} == {de["click_id"], us["click_id"]}
    assert [e["type"] for e in links.events()] == ["link.created", "link.updated", "link.deleted"]
    assert links.events()[2]["data"]["link"]["code"] == "p1"
    assert all(r.verified for r in germany.requests + humans.requests + links.requests)
    assert other_ws.requests == []


async def test_router_commits_what_it_routed_once_traffic_stops(kit: Kit, dispatcher: Any) -> None:
    """Commits are coalesced (services.dispatcher.router.COMMIT_INTERVAL_S), and the last routed
    batch is still committed when no more clicks come: the group's offsets reach the topic's end."""
    ws = f"ws_{uuid.uuid4().hex[:6]}"
    receiver = await kit.receiver()
    sub_id, secret, record = new_sub(kit, receiver.url, workspace=ws)
    receiver.secrets = [secret]
    await kit.put(Topic.WEBHOOK_SUBSCRIPTIONS, record, sub_id)
    await dispatcher(role="all")
    clicks = [enriched(ws, code=f"c{i % 7}") for i in range(60)]
    for click in clicks:
        await kit.put(Topic.CLICKS_ENRICHED, click, click["link_id"])
    await wait_until(lambda: len(receiver.events()) == len(clicks))

    topic = name(Topic.CLICKS_ENRICHED, kit.common.topic_prefix)
    tps = [TopicPartition(topic, p) for p in range(spec(Topic.CLICKS_ENRICHED).partitions)]
    consumer = make_consumer(kit.common, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.common.bootstrap)
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets(tps)
        assert sum(ends.values()) == len(clicks)
        deadline = time.monotonic() + 10
        while True:
            committed = await admin.list_consumer_group_offsets(f"{kit.common.topic_prefix}clickwire-router")
            offsets = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
            if all(offsets.get(tp, 0) == end for tp, end in ends.items()):
                break
            assert time.monotonic() < deadline, f"committed {offsets}, ends {ends}"
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
        await admin.close()
