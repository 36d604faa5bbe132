"""The foundation end to end: Avro records through the real broker into the real ClickHouse engine."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from clickwire.codec import codec_for
from clickwire.kafka import make_consumer, make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def enriched(i: int, workspace: str) -> dict:
    now = int(time.time() * 1000)
    return {
        "click_id": str(uuid.uuid4()), "ts_ms": now + i, "link_id": f"l{i % 3}", "workspace_id": workspace,
        "domain": "clk.test", "code": f"c{i % 3}", "method": "GET", "user_agent": "Mozilla/5.0",
        "referer": None, "accept_language": "en", "purpose": None, "ch_ua": None, "ch_ua_mobile": None,
        "ch_ua_platform": None, "query": "", "qr": False, "status": 302, "destination": "https://example.com/",
        "redirector_id": "r1", "ip": "203.0.113.0", "tags": ["t"], "campaign": "spring",
        "utm_source": None, "utm_medium": None, "utm_campaign": None, "utm_term": None, "utm_content": None,
        "link_created_ms": now - 1000, "country": "DE", "region": "", "city": "", "latitude": None,
        "longitude": None, "asn": 3320, "as_org": "DTAG", "browser": "Firefox", "browser_version": "120",
        "os": "Linux", "os_version": "", "device_family": "Other", "device_type": "desktop",
        "referrer_host": "", "referrer_class": "direct", "is_bot": False, "bot_kind": "none", "bot_name": "",
        "trust_score": 100, "trust_signals": [], "visitor_hash": f"v{i}", "enriched_ms": now + i + 3,
    }


async def test_avro_records_flow_from_kafka_into_clickhouse(topics: CommonSettings, clickhouse) -> None:
    """Records produced as Avro are consumed by a group, inserted into ClickHouse and read back with SQL."""
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    codec = codec_for(Topic.CLICKS_ENRICHED)
    topic = name(Topic.CLICKS_ENRICHED, topics.topic_prefix)
    sent = [enriched(i, workspace) for i in range(300)]

    producer = make_producer(topics)
    await producer.start()
    try:
        for record in sent:
            await producer.send(topic, codec.encode(record), key=record["link_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = make_consumer(topics, topic, group_id=f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    received: list[dict] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            rows = [codec.decode(r.value) for records in batch.values() for r in records]
            if rows:
                await clickhouse.insert("clickwire.clicks", rows, dedup_token=f"{workspace}-{len(received)}")
                received.extend(rows)
                await consumer.commit()
    finally:
        await consumer.stop()

    assert len(received) == len(sent)
    result = await clickhouse.query(
        "SELECT uniqExact(click_id) AS clicks, countIf(country = 'DE') AS de, groupUniqArray(link_id) AS links "
        "FROM clickwire.clicks WHERE workspace_id = {ws:String}", {"ws": workspace})
    assert result[0]["clicks"] == len(sent)
    assert result[0]["de"] == len(sent)
    assert sorted(result[0]["links"]) == ["l0", "l1", "l2"]
    ids = await clickhouse.query("SELECT click_id FROM clickwire.clicks WHERE workspace_id = {ws:String}",
                                 {"ws": workspace})
    assert {r["click_id"] for r in ids} == {r["click_id"] for r in sent}
    await asyncio.sleep(0)
