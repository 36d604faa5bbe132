"""The foundation end to end: Avro records through the real broker into the real ClickHouse engine."""

from __future__ import annotations

import time
import uuid

import pytest

from clickwire.codec import codec_for
from clickwire.kafka import make_consumer, make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from tests.integration.sink.helpers import enriched_click

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


async def test_avro_records_flow_from_kafka_into_clickhouse(topics: CommonSettings, clickhouse) -> None:
    """Records produced as Avro are consumed by a group, inserted into ClickHouse and read back with SQL."""
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    codec = codec_for(Topic.CLICKS_ENRICHED)
    topic = name(Topic.CLICKS_ENRICHED, topics.topic_prefix)
    sent = [enriched_click(workspace, i) for i in range(300)]

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
