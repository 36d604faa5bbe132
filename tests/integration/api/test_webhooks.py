"""/v1/webhooks through the real API app and server, against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from clickwire.codec import codec_for
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name, spec
from services.api.app import ApiServer
from services.api.context import ApiContext
from services.api.keys import new_key, publish_key
from services.api.settings import ApiSettings
from services.dispatcher import ssrf
from services.dispatcher.payload import schema_dir
from services.dispatcher.signing import sign, verify

# Names a fake resolver answers for: DNS that points at internal addresses, and a public one.
FAKE_DNS = {
    "loopback.example.com": ["127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": ["93.184.215.14", "10.1.2.3"],
    "public.example.com": ["93.184.215.14"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    """Answer from FAKE_DNS; unknown names fail like NXDOMAIN."""
    try:
        return FAKE_DNS[host]
    except KeyError:
        raise OSError(f"{host}: Name or service not known") from None


@dataclass
class Api:
    """A running API: a client per workspace and the settings it runs with."""

    common: CommonSettings
    ctx: ApiContext
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    base_url: str


async def _wait_for(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_api(common: CommonSettings, monkeypatch: pytest.MonkeyPatch,
                      allow_nets: str | None = "127.0.0.1/32") -> AsyncIterator[Api]:
    """Start ApiContext + the real app on 127.0.0.1 with two workspaces' keys; stop it on exit."""
    if allow_nets is None:
        monkeypatch.delenv("CLICKWIRE_WEBHOOK_ALLOW_NETS", raising=False)
    else:
        monkeypatch.setenv("CLICKWIRE_WEBHOOK_ALLOW_NETS", allow_nets)
    monkeypatch.setattr(ssrf, "system_resolver", fake_resolver)
    ctx = ApiContext(replace(ApiSettings.from_env({}), common=common))
    await ctx.start()
    server = ApiServer(ctx, "127.0.0.1", 0)
    clients: list[httpx.AsyncClient] = []
    try:
        tokens = []
        for workspace in ("ws_a", "ws_b"):
            key, token = new_key(workspace)
            await publish_key(common, ctx.producer, key)
            await _wait_for(lambda k=key: ctx.keys.get(k.id) is not None, what="API key on the table")
            tokens.append(token)
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        clients = [httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=30)
                   for t in tokens]
        yield Api(common, ctx, clients[0], clients[1], base)
    finally:
        for client in clients:
            await client.aclose()
        await server.stop()
        await ctx.stop()


async def read_topic(common: CommonSettings, topic: Topic) -> list[Any]:
    """Every record on a topic up to its current end offsets, partition by partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        physical = name(topic, common.topic_prefix)
        tps = [TopicPartition(physical, p) for p in range(spec(topic).partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 10
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                assert time.monotonic() < deadline, f"could not read {tp} to its end"
                batch = await consumer.getmany(tp, timeout_ms=200)
                records.extend(r for r in batch.get(tp, []) if r.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


async def latest_subscription(common: CommonSettings, sub_id: str) -> dict[str, Any] | None:
    """The last record for a subscription id on webhooks.subscriptions (None for a tombstone)."""
    codec = codec_for(Topic.WEBHOOK_SUBSCRIPTIONS)
    mine = [r for r in await read_topic(common, Topic.WEBHOOK_SUBSCRIPTIONS) if r.key == sub_id.encode()]
    assert mine, f"nothing on the topic for {sub_id}"
    return None if mine[-1].value is None else codec.decode(mine[-1].value)


def ping_validator() -> Draft202012Validator:
    """A validator for ping events that resolves references to the other published schemas."""
    docs = [json.loads(p.read_text()) for p in schema_dir().glob("*.json")]
    registry = Registry().with_resources([(d["$id"], Resource.from_contents(d)) for d in docs])
    ping = next(d for d in docs if d["$id"].endswith("/ping.v1.json"))
    return Draft202012Validator(ping, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


CREATE = {
    "url": "https://public.example.com/hooks/clickwire",
    "description": "CRM",
    "event_types": ["click", "link.created"],
    "filters": {"countries": ["fr", "DE"], "campaigns": ["spring"], "min_trust": 60},
    "mode": "batch",
    "batch_max": 50,
    "batch_ms": 200,
}


@pytest.mark.kafka
async def test_crud_round_trip_writes_records_and_a_tombstone(topics: CommonSettings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Create, read, list, patch and delete are answered from, and written to, the subscriptions topic."""
    async with running_api(topics, monkeypatch) as api:
        created = await api.a.post("/v1/webhooks", json=CREATE)
        assert created.status_code == 201, created.text
        hook = created.json()
        sub_id = hook["id"]
        assert created.headers["location"] == f"/v1/webhooks/{sub_id}"
        assert hook["filters"]["countries"] == ["FR", "DE"]
        on_topic = await latest_subscription(topics, sub_id)
        assert on_topic is not None
        assert on_topic["workspace_id"] == "ws_a"
        assert on_topic["url"] == CREATE["url"]
        assert on_topic["mode"] == "batch"
        assert on_topic["batch_max"] == 50
        assert on_topic["batch_ms"] == 200
        assert on_topic["filters"]["min_trust"] == 60
        assert on_topic["filters"]["include_bots"] is False
        assert on_topic["secrets"] == [{"secret": hook["secret"], "expires_ms": None}]

        got = await api.a.get(f"/v1/webhooks/{sub_id}")
        assert got.status_code == 200
        assert {k: v for k, v in got.json().items()} == {k: v for k, v in hook.items() if k != "secret"}
        listed = await api.a.get("/v1/webhooks")
        assert [h["id"] for h in listed.json()["data"]] == [sub_id]

        patched = await api.a.patch(f"/v1/webhooks/{sub_id}",
                                    json={"description": "CRM v2", "filters": {"include_bots": True},
                                          "enabled": False})
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["description"] == "CRM v2"
        assert body["filters"]["include_bots"] is True
        assert body["filters"]["countries"] == ["FR", "DE"], "filters not in the PATCH must be kept"
        assert body["enabled"] is False
        assert body["disabled_reason"] == "disabled through the API"
        on_topic = await latest_subscription(topics, sub_id)
        assert on_topic is not None
        assert on_topic["description"] == "CRM v2"
        assert on_topic["enabled"] is False
        assert on_topic["updated_ms"] > on_topic["created_ms"]
        assert on_topic["secrets"][0]["secret"] == hook["secret"], "a PATCH must not touch secrets"

        deleted = await api.a.delete(f"/v1/webhooks/{sub_id}")
        assert deleted.status_code == 204
        assert await latest_subscription(topics, sub_id) is None
        gone = await api.a.get(f"/v1/webhooks/{sub_id}")
        assert gone.status_code == 404
        assert gone.headers["content-type"] == "application/problem+json"
        assert (await api.a.get("/v1/webhooks")).json()["data"] == []


@pytest.mark.kafka
async def test_secret_is_shown_once_and_workspaces_are_isolated(topics: CommonSettings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the create response carries the secret, and another workspace cannot see or touch the webhook."""
    async with running_api(topics, monkeypatch) as api:
        created = await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})
        assert created.status_code == 201
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        sub_id = created.json()["id"]
        for response in (await api.a.get(f"/v1/webhooks/{sub_id}"), await api.a.get("/v1/webhooks"),
                         await api.a.patch(f"/v1/webhooks/{sub_id}", json={"description": "x"})):
            assert response.status_code == 200
            assert "whsec_" not in response.text
            assert secret.removeprefix("whsec_") not in response.text

        assert (await api.b.get(f"/v1/webhooks/{sub_id}")).status_code == 404
        assert (await api.b.patch(f"/v1/webhooks/{sub_id}", json={"description": "y"})).status_code == 404
        assert (await api.b.delete(f"/v1/webhooks/{sub_id}")).status_code == 404
        assert (await api.b.post(f"/v1/webhooks/{sub_id}/rotate-secret")).status_code == 404
        assert (await api.b.get("/v1/webhooks")).json()["data"] == []
        async with httpx.AsyncClient(base_url=api.base_url) as anonymous:
            assert (await anonymous.get("/v1/webhooks")).status_code == 401


@pytest.mark.kafka
async def test_rotation_keeps_the_old_secret_until_the_grace_period_ends(topics: CommonSettings,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """rotate-secret puts the new secret first and keeps the old one with expiry now + grace."""
    async with running_api(topics, monkeypatch) as api:
        created = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()
        before = int(time.time() * 1000)
        rotated = await api.a.post(f"/v1/webhooks/{created['id']}/rotate-secret", json={"grace_seconds": 3600})
        after = int(time.time() * 1000)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_")
        assert new != created["secret"]
        record = await latest_subscription(topics, created["id"])
        assert record is not None
        assert [s["secret"] for s in record["secrets"]] == [new, created["secret"]]
        assert record["secrets"][0]["expires_ms"] is None
        assert before + 3_600_000 <= record["secrets"][1]["expires_ms"] <= after + 3_600_000
        # During the grace period a receiver holding either secret verifies the dispatcher's signature.
        header = sign([s["secret"] for s in record["secrets"]], "evt_1", int(time.time()), b"{}")
        for secret in (new, created["secret"]):
            verify([secret], {"webhook-id": "evt_1", "webhook-timestamp": str(int(time.time())),
                              "webhook-signature": header}, b"{}")

        again = await api.a.post(f"/v1/webhooks/{created['id']}/rotate-secret")  # default grace: 24 h
        record = await latest_subscription(topics, created["id"])
        assert record is not None
        assert [s["secret"] for s in record["secrets"]] == [again.json()["secret"], new, created["secret"]]
        assert record["secrets"][1]["expires_ms"] >= before + 24 * 3_600_000
        shown = (await api.a.get(f"/v1/webhooks/{created['id']}")).json()
        assert len(shown["previous_secrets_expire_at"]) == 2
        bad = await api.a.post(f"/v1/webhooks/{created['id']}/rotate-secret", params={"grace_seconds": "-5"})
        assert bad.status_code == 422


@pytest.mark.kafka
async def test_internal_urls_are_refused_at_create_and_update(topics: CommonSettings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback, metadata, mapped IPv6, private and internal names get 422 with the guard's reason."""
    refused = {
        "http://127.0.0.1/h": "loopback",
        "http://2130706433/h": "loopback",
        "http://0x7f.1/h": "loopback",
        "http://169.254.169.254/latest/meta-data/": "metadata",
        "http://[::ffff:127.0.0.1]/h": "loopback",
        "http://[::]/h": "unspecified",
        "http://10.0.0.8/h": "private",
        "http://localhost:8080/h": "internal_name",
        "http://metadata.google.internal/h": "internal_name",
        "https://loopback.example.com/h": "loopback",
        "https://metadata.example.com/h": "metadata",
        "https://mixed.example.com/h": "private",
        "https://nxdomain.example.com/h": "dns_failure",
        "ftp://public.example.com/h": "scheme",
        "https://user:pw@public.example.com/h": "credentials",
    }
    async with running_api(topics, monkeypatch, allow_nets=None) as api:
        for url, reason in refused.items():
            response = await api.a.post("/v1/webhooks", json={"url": url})
            assert response.status_code == 422, url
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["reason"] == reason, url
            assert response.json()["errors"][0]["loc"] == ["url"]
        ok = await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})
        assert ok.status_code == 201
        moved = await api.a.patch(f"/v1/webhooks/{ok.json()['id']}", json={"url": "https://loopback.example.com/"})
        assert moved.status_code == 422
        assert moved.json()["reason"] == "loopback"
        record = await latest_subscription(topics, ok.json()["id"])
        assert record is not None
        assert record["url"] == "https://public.example.com/h"


@pytest.mark.kafka
async def test_allow_list_lets_development_receivers_on_loopback(topics: CommonSettings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """CLICKWIRE_WEBHOOK_ALLOW_NETS admits its networks, but never the cloud metadata address."""
    async with running_api(topics, monkeypatch, allow_nets="127.0.0.1/32,169.254.0.0/16") as api:
        assert (await api.a.post("/v1/webhooks", json={"url": "http://127.0.0.1:8080/h"})).status_code == 201
        assert (await api.a.post("/v1/webhooks", json={"url": "https://loopback.example.com/h"})).status_code == 201
        other = await api.a.post("/v1/webhooks", json={"url": "http://127.0.0.2/h"})
        assert other.status_code == 422
        assert other.json()["reason"] == "loopback"
        metadata = await api.a.post("/v1/webhooks", json={"url": "http://169.254.169.254/"})
        assert metadata.status_code == 422
        assert metadata.json()["reason"] == "metadata"


@pytest.mark.kafka
async def test_bodies_are_validated_strictly(topics: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown event types, fields and out-of-range batch sizes are 422 naming each bad field."""
    async with running_api(topics, monkeypatch) as api:
        response = await api.a.post("/v1/webhooks", json={
            "url": "https://public.example.com/h", "event_types": ["click", "clicked"], "batch_max": 0,
            "filters": {"device_types": ["phone"], "min_trust": 101}, "evnet_types": ["click"]})
        assert response.status_code == 422
        locs = {tuple(e["loc"]) for e in response.json()["errors"]}
        assert ("event_types", 1) in locs
        assert ("batch_max",) in locs
        assert ("filters", "device_types", 0) in locs
        assert ("filters", "min_trust") in locs
        assert ("evnet_types",) in locs
        assert (await api.a.post("/v1/webhooks", json={"description": "no url"})).status_code == 422
        assert (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h",
                                                       "event_types": []})).status_code == 422
        created = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()
        nulled = await api.a.patch(f"/v1/webhooks/{created['id']}", json={"url": None})
        assert nulled.status_code == 422


@pytest.mark.kafka
async def test_test_ping_lands_on_the_outbox_with_a_valid_body(topics: CommonSettings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /test queues a ping delivery keyed by the subscription whose body matches ping.v1.json."""
    async with running_api(topics, monkeypatch) as api:
        created = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()
        response = await api.a.post(f"/v1/webhooks/{created['id']}/test")
        assert response.status_code == 202, response.text
        event_id = response.json()["event_id"]
        codec = codec_for(Topic.WEBHOOK_OUTBOX)
        records = [r for r in await read_topic(topics, Topic.WEBHOOK_OUTBOX)]
        assert len(records) == 1
        assert records[0].key == created["id"].encode()
        delivery = codec.decode(records[0].value)
        assert delivery["event_id"] == event_id
        assert delivery["subscription_id"] == created["id"]
        assert delivery["event_type"] == "ping"
        assert delivery["attempt"] == 0
        body = json.loads(delivery["body"])
        ping_validator().validate(body)
        assert body["id"] == event_id
        assert body["data"]["webhook"] == {"id": created["id"], "url": created["url"]}

        await api.a.patch(f"/v1/webhooks/{created['id']}", json={"enabled": False})
        refused = await api.a.post(f"/v1/webhooks/{created['id']}/test")
        assert refused.status_code == 409
        assert refused.json()["reason"] == "webhook_disabled"


@pytest.mark.kafka
async def test_openapi_documents_every_webhook_route(topics: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """/openapi.json lists the webhook paths and resolves every schema they reference."""
    async with running_api(topics, monkeypatch) as api:
        doc = (await api.a.get("/openapi.json")).json()
    for path in ("/v1/webhooks", "/v1/webhooks/{id}", "/v1/webhooks/{id}/rotate-secret", "/v1/webhooks/{id}/test",
                 "/v1/webhooks/{id}/attempts", "/v1/webhooks/{id}/replay"):
        assert path in doc["paths"], path
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"].rsplit("/", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert {"WebhookCreate", "WebhookCreated", "AttemptPage", "ReplayBody"} <= refs
    assert refs <= set(doc["components"]["schemas"])
