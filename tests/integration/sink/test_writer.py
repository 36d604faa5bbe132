"""The batch writer against the real broker and the embedded ClickHouse engine, in-process."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from clickwire.codec import codec_for
from clickwire.links import Link
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.sink.faults import FailWhileFileExists

from .helpers import clicks, count_clicks, enriched_click, eventually, produce, running_writer, sink_settings

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def _workspace() -> str:
    return f"ws_{uuid.uuid4().hex[:10]}"


async def _group_offsets(common: CommonSettings, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=common.bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def test_enriched_clicks_become_queryable_and_offsets_are_committed(topics, clickhouse) -> None:
    """Clicks produced to clicks.enriched land in clickwire.clicks, each once, and the group commits their end."""
    ws = _workspace()
    sent = clicks(ws, 500)
    settings = sink_settings(topics, batch_max=200)
    async with running_writer(settings, clickhouse):
        await produce(topics, Topic.CLICKS_ENRICHED, sent)
        await eventually(lambda: _has(clickhouse, ws, len(sent)), what="500 clicks in ClickHouse")
    counts = await count_clicks(clickhouse, ws)
    assert counts == {"plain": 500, "uniq": 500, "final": 500}
    rows = await clickhouse.query(
        "SELECT click_id, country, is_bot FROM clickwire.clicks WHERE workspace_id = {ws:String}", {"ws": ws})
    assert {(r["click_id"], r["country"], r["is_bot"]) for r in rows} == {
        (c["click_id"], c["country"], c["is_bot"]) for c in sent}
    committed = await _group_offsets(topics, settings.group_id)
    clicks_topic = name(Topic.CLICKS_ENRICHED, topics.topic_prefix)
    assert sum(o for tp, o in committed.items() if tp.topic == clicks_topic) == 500


async def _has(store, ws: str, n: int) -> bool:
    return (await count_clicks(store, ws))["uniq"] >= n


async def test_replay_by_a_second_group_counts_every_click_once(topics, clickhouse) -> None:
    """Reading the same records again under another group leaves uniqExact = count() FINAL = count() = sent."""
    ws = _workspace()
    sent = clicks(ws, 300, seed=2)
    await produce(topics, Topic.CLICKS_ENRICHED, sent)
    async with running_writer(sink_settings(topics, batch_max=64), clickhouse):
        await eventually(lambda: _has(clickhouse, ws, 300), what="first pass")
    # A different batch size cuts different batches, so dedup tokens differ: the replay check must hold.
    second = sink_settings(topics, batch_max=50)
    async with running_writer(second, clickhouse) as writer:
        clicks_topic = name(Topic.CLICKS_ENRICHED, topics.topic_prefix)

        async def replayed() -> bool:
            return sum(o for tp, o in writer.committed().items() if tp.topic == clicks_topic) == 300

        await eventually(replayed, what="second group to commit every click")
    assert await count_clicks(clickhouse, ws) == {"plain": 300, "uniq": 300, "final": 300}


async def test_failing_writes_commit_nothing_and_lose_nothing(topics, clickhouse, tmp_path) -> None:
    """While inserts fail no offset is committed and nothing is written; after recovery every click is there."""
    ws = _workspace()
    fault = tmp_path / "fail-writes"
    fault.touch()
    store = FailWhileFileExists(clickhouse, fault)
    settings = sink_settings(topics, batch_max=100)
    sent = clicks(ws, 250, seed=3)
    async with running_writer(settings, store) as writer:
        await produce(topics, Topic.CLICKS_ENRICHED, sent)

        async def failed_twice() -> bool:
            return store.failed_inserts >= 3 and writer.health()["writes_failing"]

        await eventually(failed_twice, what="inserts to fail")
        assert await _group_offsets(topics, settings.group_id) == {}
        assert (await count_clicks(clickhouse, ws))["plain"] == 0
        assert writer.health()["buffered_batches"] >= 1
        clicks_topic = name(Topic.CLICKS_ENRICHED, topics.topic_prefix)

        async def lag_visible() -> bool:
            return _lag(clicks_topic) == 250

        await eventually(lag_visible, what="clickwire_sink_lag to show the 250 unwritten clicks")
        fault.unlink()
        await eventually(lambda: _has(clickhouse, ws, 250), what="recovery")
        await eventually(lambda: _truthy(not writer.health()["writes_failing"]), what="failing flag cleared")
    assert await count_clicks(clickhouse, ws) == {"plain": 250, "uniq": 250, "final": 250}
    committed = await _group_offsets(topics, settings.group_id)
    assert sum(o for tp, o in committed.items() if tp.topic == clicks_topic) == 250


def _lag(topic: str) -> float:
    return sum(REGISTRY.get_sample_value("clickwire_sink_lag", {"topic": topic, "partition": str(p)}) or 0
               for p in range(6))


async def _truthy(value: bool) -> bool:
    return value


async def test_poison_record_goes_to_dead_letters_and_later_clicks_flow(topics, clickhouse) -> None:
    """An undecodable record is published to deadletters with its reason and origin, stored in dead_letters,
    and the clicks after it on the same partition are written."""
    ws = _workspace()
    before = [enriched_click(ws, 0)]
    after = [enriched_click(ws, 1), enriched_click(ws, 2)]
    poison = b"\xc3\x01not avro at all"
    await produce(topics, Topic.CLICKS_ENRICHED, [*before, poison, *after], keys=[b"a"] * 4, partition=0)
    async with running_writer(sink_settings(topics), clickhouse):
        await eventually(lambda: _has(clickhouse, ws, 3), what="clicks around the poison record")

        async def stored() -> bool:
            rows = await clickhouse.query(
                "SELECT count() AS n FROM clickwire.dead_letters WHERE source_topic = {t:String}",
                {"t": name(Topic.CLICKS_ENRICHED, topics.topic_prefix)})
            return rows[0]["n"] >= 1

        await eventually(stored, what="the dead letter in ClickHouse")
    assert await count_clicks(clickhouse, ws) == {"plain": 3, "uniq": 3, "final": 3}
    consumer = AIOKafkaConsumer(name(Topic.DEAD_LETTERS, topics.topic_prefix), bootstrap_servers=topics.bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    letters = [codec_for(Topic.DEAD_LETTERS).decode(r.value) for rs in batch.values() for r in rs]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["source_topic"], letter["partition"], letter["offset"]) == (
        name(Topic.CLICKS_ENRICHED, topics.topic_prefix), 0, 1)
    assert letter["value"] == poison
    assert letter["error_class"] == "undecodable"
    assert letter["service"] == "sink"
    assert "Error" in letter["reason"]


async def test_links_topic_fills_links_table_and_tombstones_mark_deleted(topics, clickhouse) -> None:
    """Link versions land in clickwire.links (latest wins under FINAL) and a tombstone marks the link deleted."""
    ws = _workspace()
    now = int(time.time() * 1000)
    code = uuid.uuid4().hex[:8]
    v1 = Link(id=f"id-{code}", workspace_id=ws, domain="clk.test", code=code, destination="https://a.test/",
              created_ms=now, updated_ms=now, tags=("x",), campaign="spring")
    v2 = replace(v1, destination="https://b.test/", updated_ms=now + 5)
    other = replace(v1, id=f"id2-{code}", code=code + "x")
    key = v1.key.encode()
    await produce(topics, Topic.LINKS, [v1.to_avro(), v2.to_avro(), other.to_avro()],
                  keys=[key, key, other.key.encode()])
    async with running_writer(sink_settings(topics), clickhouse):
        async def latest() -> list[dict]:
            return await clickhouse.query(
                "SELECT id, destination, deleted, tags, campaign FROM clickwire.links FINAL"
                " WHERE workspace_id = {ws:String} ORDER BY id", {"ws": ws})

        async def both() -> bool:
            rows = await latest()
            return len(rows) == 2 and rows[0]["destination"] == "https://b.test/"

        await eventually(both, what="two links, latest version first")
        await produce(topics, Topic.LINKS, [None], keys=[key])

        async def deleted() -> bool:
            return [r["deleted"] for r in await latest()] == [1, 0]

        await eventually(deleted, what="the tombstone")
    rows = await latest()
    assert rows[0]["id"] == v1.id
    assert rows[0]["tags"] == ["x"]
    assert rows[0]["campaign"] == "spring"
    live = await clickhouse.query("SELECT id FROM clickwire.links FINAL WHERE workspace_id = {ws:String}"
                                  " AND NOT deleted", {"ws": ws})
    assert [r["id"] for r in live] == [other.id]


async def test_webhook_attempts_land_in_their_table(topics, clickhouse) -> None:
    """Attempts from webhooks.attempts are written to clickwire.webhook_attempts."""
    sub = f"sub_{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    attempts = [
        {"event_id": f"evt{i}", "subscription_id": sub, "attempt": 1, "ts_ms": now + i, "status": 200,
         "latency_ms": 12.5, "outcome": "success", "error_class": None, "response_excerpt": "ok",
         "next_attempt_ms": None}
        for i in range(5)
    ]
    await produce(topics, Topic.WEBHOOK_ATTEMPTS, attempts, keys=[sub.encode()] * 5)
    async with running_writer(sink_settings(topics), clickhouse):
        async def written() -> bool:
            rows = await clickhouse.query("SELECT count() AS n FROM clickwire.webhook_attempts FINAL"
                                          " WHERE subscription_id = {s:String}", {"s": sub})
            return rows[0]["n"] == 5

        await eventually(written, what="5 attempts")
