"""POST /v1/webhooks/{id}/replay re-queues the right outbox records, in order, against the real broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from clickwire.codec import codec_for
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name, spec
from services.api.replay import REPLAY_HEADER, ReplayRequest, outbox_partition, replay
from tests.integration.api.test_webhooks import read_topic, running_api

OUTBOX_PARTITIONS = list(range(spec(Topic.WEBHOOK_OUTBOX).partitions))


def neighbour_of(sub_id: str) -> str:
    """A subscription id whose deliveries share sub_id's outbox partition (the hard case for filtering)."""
    target = outbox_partition(sub_id, OUTBOX_PARTITIONS)
    return next(f"wh_neighbour{i}" for i in range(10_000)
                if outbox_partition(f"wh_neighbour{i}", OUTBOX_PARTITIONS) == target)


def iso(ms: int) -> str:
    """RFC 3339 for ms since the epoch."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


async def put_deliveries(common: CommonSettings, producer: AIOKafkaProducer, sub_id: str, other: str,
                         t0: int) -> None:
    """Five deliveries for sub_id one second apart, each followed by one for `other` (same ids for a2)."""
    codec = codec_for(Topic.WEBHOOK_OUTBOX)
    topic = name(Topic.WEBHOOK_OUTBOX, common.topic_prefix)
    for i in range(5):
        at = t0 + i * 1000
        for sub, event_id in ((sub_id, f"evt_a{i}"), (other, "evt_a2" if i == 2 else f"evt_b{i}")):
            record = {"event_id": event_id, "subscription_id": sub, "event_type": "click", "created_ms": at - 5,
                      "body": orjson.dumps({"id": event_id, "sub": sub}), "attempt": 2 if i == 1 else 0,
                      "not_before_ms": at + 60_000 if i == 1 else 0}
            await producer.send_and_wait(topic, codec.encode(record), key=sub.encode(), timestamp_ms=at)


async def replayed(common: CommonSettings, after: int) -> list[Any]:
    """Outbox records written after the first `after` ones of the subscription's partition, decoded."""
    codec = codec_for(Topic.WEBHOOK_OUTBOX)
    records = await read_topic(common, Topic.WEBHOOK_OUTBOX)
    return [(r.key.decode(), codec.decode(r.value), dict(r.headers)) for r in records[after:]]


@pytest.mark.kafka
async def test_replay_by_event_ids_requeues_only_this_subscriptions_records_in_order(
        topics: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listed ids of this subscription are produced again in outbox order with attempt reset; others are not."""
    async with running_api(topics, monkeypatch) as api:
        sub_id = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()["id"]
        t0 = int(time.time() * 1000) - 60_000
        await put_deliveries(topics, api.ctx.producer, sub_id, neighbour_of(sub_id), t0)
        response = await api.a.post(f"/v1/webhooks/{sub_id}/replay",
                                    json={"event_ids": ["evt_a3", "evt_a1", "evt_a2", "evt_missing"]})
        assert response.status_code == 202, response.text
        result = response.json()
        assert result["queued"] == 3
        assert result["complete"] is True
        assert result["missing_event_ids"] == ["evt_missing"]
        copies = await replayed(topics, 10)
        assert [(key, d["event_id"]) for key, d, _ in copies] == [(sub_id, "evt_a1"), (sub_id, "evt_a2"),
                                                                  (sub_id, "evt_a3")]
        for _, delivery, headers in copies:
            assert delivery["subscription_id"] == sub_id
            assert delivery["attempt"] == 0
            assert delivery["not_before_ms"] == 0
            assert orjson.loads(delivery["body"]) == {"id": delivery["event_id"], "sub": sub_id}
            assert headers[REPLAY_HEADER] == b"1"


@pytest.mark.kafka
async def test_replay_by_time_range_requeues_records_queued_in_that_range(
        topics: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """[since, until) of outbox time selects exactly the subscription's records queued then."""
    async with running_api(topics, monkeypatch) as api:
        sub_id = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()["id"]
        t0 = int(time.time() * 1000) - 60_000
        await put_deliveries(topics, api.ctx.producer, sub_id, neighbour_of(sub_id), t0)
        response = await api.a.post(f"/v1/webhooks/{sub_id}/replay",
                                    json={"since": iso(t0 + 1000), "until": iso(t0 + 3000)})
        assert response.status_code == 202, response.text
        assert response.json()["queued"] == 2
        copies = await replayed(topics, 10)
        assert [d["event_id"] for _, d, _ in copies] == ["evt_a1", "evt_a2"]
        assert {key for key, _, _ in copies} == {sub_id}

        open_ended = await api.a.post(f"/v1/webhooks/{sub_id}/replay",
                                      json={"since": iso(t0 + 4000), "event_ids": ["evt_a4", "evt_a0"]})
        assert open_ended.json()["queued"] == 1
        assert open_ended.json()["missing_event_ids"] == ["evt_a0"], "evt_a0 was queued before since"

        bad_bodies: list[dict[str, Any]] = [{}, {"until": iso(t0)}, {"since": iso(t0 + 2000), "until": iso(t0 + 1000)},
                                            {"since": "2026-01-01T00:00:00"}, {"event_ids": []}]
        refused = [await api.a.post(f"/v1/webhooks/{sub_id}/replay", json=body) for body in bad_bodies]
        assert [r.status_code for r in refused] == [422] * 5
        assert (await api.b.post(f"/v1/webhooks/{sub_id}/replay",
                                 json={"event_ids": ["evt_a1"]})).status_code == 404


@pytest.mark.kafka
async def test_a_capped_replay_says_where_to_resume(topics: CommonSettings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan stopped by its cap reports incomplete with the outbox time of the next record to read."""
    async with running_api(topics, monkeypatch) as api:
        sub_id = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()["id"]
        t0 = int(time.time() * 1000) - 60_000
        await put_deliveries(topics, api.ctx.producer, sub_id, neighbour_of(sub_id), t0)
        result = await replay(topics, api.ctx.producer, sub_id, ReplayRequest(None, t0, None), max_queued=2)
        assert result.queued == 2
        assert result.complete is False
        assert result.resume_from_ms == t0 + 2000, "resume at the next record to send, evt_a2"
        rest = await replay(topics, api.ctx.producer, sub_id, ReplayRequest(None, result.resume_from_ms, t0 + 5000))
        assert rest.complete is True
        copies = await replayed(topics, 10)
        assert [d["event_id"] for _, d, _ in copies] == ["evt_a0", "evt_a1", "evt_a2", "evt_a3", "evt_a4"]
