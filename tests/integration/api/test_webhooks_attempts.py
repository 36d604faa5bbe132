"""GET /v1/webhooks/{id}/attempts pages through ClickHouse via the sink's real /sql server."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from clickwire.settings import CommonSettings
from services.sink.server import SqlServer
from tests.integration.api.test_webhooks import running_api


def attempt_row(sub_id: str, ts_ms: int, event_id: str, attempt: int, status: int = 500) -> dict[str, Any]:
    """One clickwire.webhook_attempts row."""
    return {"event_id": event_id, "subscription_id": sub_id, "attempt": attempt, "ts_ms": ts_ms,
            "status": status, "latency_ms": 12.5, "outcome": "success" if status == 200 else "retry",
            "error_class": None if status == 200 else "http_status", "response_excerpt": "nope",
            "next_attempt_ms": None if status == 200 else ts_ms + 5000}


async def _healthy() -> dict[str, Any]:
    return {"ok": True}


@pytest.mark.kafka
@pytest.mark.clickhouse
async def test_attempts_are_paged_newest_first_without_gaps_or_repeats(
        topics: CommonSettings, clickhouse: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyset pages cover every attempt of the subscription once, newest first, and nothing of others."""
    server = SqlServer(clickhouse, _healthy, host="127.0.0.1", port=0)
    await server.start()
    monkeypatch.setenv("CLICKWIRE_SINK_URL", server.url)
    try:
        async with running_api(topics, monkeypatch) as api:
            sub_id = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()["id"]
            t0 = int(time.time() * 1000) - 3_600_000
            # Two attempts share a millisecond and an event: the tie-breakers must keep them apart.
            mine = [attempt_row(sub_id, t0, "evt_1", 1), attempt_row(sub_id, t0, "evt_1", 2),
                    *(attempt_row(sub_id, t0 + i * 1000, f"evt_{i}", 1, 200) for i in range(2, 7))]
            others = [attempt_row(f"wh_{uuid.uuid4().hex}", t0 + 500, "evt_x", 1)]
            await clickhouse.insert("clickwire.webhook_attempts", mine + others)
            # The sink may write a batch twice (at-least-once); FINAL lists each attempt once.
            await clickhouse.insert("clickwire.webhook_attempts", mine[:1], dedup_token=uuid.uuid4().hex)

            seen: list[tuple[str, int]] = []
            cursor: str | None = None
            pages = 0
            while True:
                params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
                response = await api.a.get(f"/v1/webhooks/{sub_id}/attempts", params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                seen.extend((a["event_id"], a["attempt"]) for a in page["data"])
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
                assert pages < 10, "pagination does not end"
            expected = [(f"evt_{i}", 1) for i in range(6, 1, -1)] + [("evt_1", 2), ("evt_1", 1)]
            assert seen == expected
            assert pages == 3

            first = (await api.a.get(f"/v1/webhooks/{sub_id}/attempts", params={"limit": "1"})).json()["data"][0]
            assert first["status"] == 200
            assert first["outcome"] == "success"
            assert first["at"].endswith("Z")
            assert (await api.a.get(f"/v1/webhooks/{sub_id}/attempts",
                                    params={"cursor": "garbage!"})).json()["reason"] == "invalid_cursor"
            assert (await api.a.get(f"/v1/webhooks/{sub_id}/attempts",
                                    params={"limit": "0"})).status_code == 400
            assert (await api.b.get(f"/v1/webhooks/{sub_id}/attempts")).status_code == 404
    finally:
        await server.stop()


@pytest.mark.kafka
async def test_attempts_answer_503_when_the_sink_is_down(topics: CommonSettings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With no sink listening the attempt log is a 503 problem, not a 500."""
    monkeypatch.setenv("CLICKWIRE_SINK_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    async with running_api(topics, monkeypatch) as api:
        sub_id = (await api.a.post("/v1/webhooks", json={"url": "https://public.example.com/h"})).json()["id"]
        response = await api.a.get(f"/v1/webhooks/{sub_id}/attempts")
        assert response.status_code == 503
        assert response.json()["reason"] == "unavailable"
