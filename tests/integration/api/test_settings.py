"""GET/PUT /v1/settings/events against a real broker and a real HTTP server, and the patterns service obeying them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from clickwire.codec import codec_for
from clickwire.kafka import make_producer
from clickwire.topics import Topic
from tests.integration.api.conftest import RunningApi, problem, read_topic, until
from tests.integration.patterns.conftest import Kit, click, link, summary

pytestmark = pytest.mark.kafka


def workspace() -> str:
    return f"ws_set_{uuid.uuid4().hex[:8]}"


async def test_defaults_are_shown_for_a_workspace_that_set_nothing(api: RunningApi) -> None:
    """A new workspace reads the documented defaults, no overrides and no update time."""
    ws = workspace()
    async with api.client(await api.token(ws)) as c:
        r = await c.get("/v1/settings/events")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["workspace_id"], body["overrides"], body["updated_at"]) == (ws, {}, None)
    events = body["events"]
    assert events["milestones"] == {"counts": [100, 1000, 10000, 100000], "entities": ["link", "campaign", "tag"]}
    assert events["spikes"] == {"window_s": 300, "baseline_s": 3600, "factor": 3.0, "min_count": 20,
                                "cooldown_s": 1800, "dimensions": ["country", "referrer_class"],
                                "entities": ["link", "campaign"]}
    assert events["suspicious"] == {"window_s": 60, "min_count": 20, "min_share": 0.5, "trust_below": 40,
                                    "ip_min": 30, "asn_min": 500, "asn_share": 0.9, "cooldown_s": 600}
    assert events["destinations"] == {"fail_after": 3}


async def test_put_replaces_overrides_is_read_back_and_is_per_workspace(api: RunningApi) -> None:
    """A PUT answers the merged thresholds, a GET right after reads them, the record is on
    workspace.settings, another workspace keeps the defaults, and a second PUT replaces the first."""
    ws, other = workspace(), workspace()
    change = {"milestones": {"counts": [50, 5]}, "spikes": {"window_s": 600, "factor": 4, "dimensions": ["country"]}}
    async with api.client(await api.token(ws)) as c, api.client(await api.token(other)) as o:
        put = await c.put("/v1/settings/events", json=change)
        assert put.status_code == 200, put.text
        got = await c.get("/v1/settings/events")
        others = await o.get("/v1/settings/events")
        assert got.status_code == 200
        for body in (put.json(), got.json()):
            assert body["overrides"] == change
            assert body["events"]["milestones"]["counts"] == [5, 50]  # sorted, as the detectors use them
            assert body["events"]["spikes"]["window_s"] == 600
            assert body["events"]["spikes"]["factor"] == 4.0
            assert body["events"]["spikes"]["dimensions"] == ["country"]
            assert body["events"]["spikes"]["min_count"] == 20  # not overridden: the default
            assert body["events"]["suspicious"]["ip_min"] == 30
            assert body["updated_at"] is not None
        assert others.json()["overrides"] == {}
        assert others.json()["events"]["milestones"]["counts"] == [100, 1000, 10000, 100000]

        codec = codec_for(Topic.WORKSPACE_SETTINGS)
        records = [codec.decode(v) for k, v in await read_topic(api.common, Topic.WORKSPACE_SETTINGS)
                   if k == ws and v is not None]
        assert [orjson.loads(r["events_json"]) for r in records] == [change]

        again = await c.put("/v1/settings/events", json={"destinations": {"fail_after": 5}})
        assert again.status_code == 200, again.text
        body = (await c.get("/v1/settings/events")).json()
        assert body["overrides"] == {"destinations": {"fail_after": 5}}
        assert body["events"]["milestones"]["counts"] == [100, 1000, 10000, 100000]  # the first PUT is gone
        assert body["events"]["destinations"]["fail_after"] == 5

        reset = await c.put("/v1/settings/events", json={})
        assert reset.status_code == 200
        assert (await c.get("/v1/settings/events")).json()["overrides"] == {}


@pytest.mark.parametrize(("case", "body", "status", "reason", "loc"), [
    ("unknown section", b'{"milestone": {"counts": [5]}}', 422, "invalid_body", None),
    ("unknown key", b'{"spikes": {"window": 60}}', 422, "invalid_body", ["spikes", "window"]),
    ("section not an object", b'{"spikes": 5}', 422, "invalid_body", None),
    ("body not an object", b'[{"spikes": {}}]', 422, "invalid_body", None),
    ("factor below 1", b'{"spikes": {"factor": 0.5}}', 422, "invalid_body", ["spikes", "factor"]),
    ("window of 0", b'{"suspicious": {"window_s": 0}}', 422, "invalid_body", ["suspicious", "window_s"]),
    ("share above 1", b'{"suspicious": {"min_share": 1.5}}', 422, "invalid_body", ["suspicious", "min_share"]),
    ("milestone of 0", b'{"milestones": {"counts": [0, 10]}}', 422, "invalid_body", ["milestones"]),
    ("baseline shorter than window", b'{"spikes": {"window_s": 600, "baseline_s": 300}}', 422, "invalid_body",
     ["spikes"]),
    ("unknown dimension", b'{"spikes": {"dimensions": ["city"]}}', 422, "invalid_body", ["spikes", "dimensions", 0]),
    ("string for a number", b'{"spikes": {"min_count": "25"}}', 422, "invalid_body", ["spikes", "min_count"]),
    ("bool for a number", b'{"destinations": {"fail_after": true}}', 422, "invalid_body",
     ["destinations", "fail_after"]),
    ("float for a count", b'{"milestones": {"counts": [5.5]}}', 422, "invalid_body", ["milestones", "counts", 0]),
    ("invalid JSON", b'{"spikes": ', 400, "invalid_json", None),
])
async def test_invalid_thresholds_are_a_problem_and_change_nothing(
        api: RunningApi, case: str, body: bytes, status: int, reason: str, loc: list[Any] | None) -> None:
    """Each invalid body is a 4xx problem+json with its machine-readable reason (and where, for schema
    errors), never coerced; the workspace's thresholds stay as they were."""
    ws = workspace()
    async with api.client(await api.token(ws)) as c:
        assert (await c.put("/v1/settings/events", json={"destinations": {"fail_after": 4}})).status_code == 200
        r = await c.put("/v1/settings/events", content=body, headers={"content-type": "application/json"})
        after = (await c.get("/v1/settings/events")).json()
    assert r.status_code == status, (case, r.text)
    doc = problem(r)
    assert doc["reason"] == reason, case
    if loc is not None:
        assert loc in [e["loc"] for e in doc["errors"]], (case, doc)
    assert after["overrides"] == {"destinations": {"fail_after": 4}}, case


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer cw_nope.nope"}, {"Authorization": "Basic eA=="}])
async def test_without_a_valid_key_both_routes_are_401(api: RunningApi, headers: dict[str, str]) -> None:
    """No key, an unknown key or another scheme: 401 unauthorized for GET and PUT, nothing written."""
    before = len(await read_topic(api.common, Topic.WORKSPACE_SETTINGS))
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as c:
        get = await c.get("/v1/settings/events")
        put = await c.put("/v1/settings/events", json={"destinations": {"fail_after": 9}})
    for r in (get, put):
        assert r.status_code == 401, r.text
        assert problem(r)["reason"] == "unauthorized"
    assert len(await read_topic(api.common, Topic.WORKSPACE_SETTINGS)) == before


async def test_the_patterns_service_applies_a_threshold_put_through_the_api(api: RunningApi) -> None:
    """After a PUT of milestone counts [3] for one workspace, the running patterns service announces that
    workspace's link at its third human click, once, while a link of a workspace on the defaults is silent."""
    ws, plain = workspace(), workspace()
    producer = make_producer(api.common, linger_ms=1)
    await producer.start()
    kit = Kit(api.common, producer)
    try:
        health_port = await kit.start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}", timeout=5) as health:
            async def workspaces() -> int:
                return int((await health.get("/health")).json()["workspaces"])

            known = await workspaces()
            async with api.client(await api.token(ws)) as c:
                r = await c.put("/v1/settings/events", json={"milestones": {"counts": [3], "entities": ["link"]}})
                assert r.status_code == 200, r.text

            async def applied() -> bool:
                return await workspaces() > known
            await until(applied, "the patterns service following the PUT", timeout_s=15)
        custom, default = link(ws, campaign="c1", tags=("t1",)), link(plain)
        now = int(time.time() * 1000)
        await kit.clicks([click(custom, ts_ms=now + i) for i in range(4)] +
                         [click(default, ts_ms=now + i) for i in range(4)])
        events = await kit.derived(lambda es: len(es) >= 1, settle_s=1.5)
        assert [(e["type"], e["workspace_id"], e["entity_kind"], e["entity_id"]) for e in events] == [
            ("milestone.reached", ws, "link", custom["id"])], summary(events)
        data = orjson.loads(events[0]["data_json"])
        assert data["milestone"]["threshold"] == data["milestone"]["human_clicks"] == 3
    finally:
        await kit.stop_all()
        await producer.stop()
