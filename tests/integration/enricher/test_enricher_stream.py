"""The enricher against the real broker: join, bots, velocity, dead letters, link stats, health."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from tests.integration.enricher.helpers import (
    UA_SLACK,
    EnricherProcess,
    TopicReader,
    encode,
    free_port,
    link_record,
    produce,
    raw_click,
)

pytestmark = [pytest.mark.kafka]


@pytest.fixture
def enricher_proc(topics: CommonSettings, tmp_path: Path) -> Iterator[EnricherProcess]:
    """A running `clickwire enricher` on this test's topics, stopped at teardown pass or fail."""
    proc = EnricherProcess(topics, tmp_path / "home", CLICKWIRE_METRICS_PORT=str(free_port()),
                           CLICKWIRE_ENRICHER_STATS_INTERVAL="0.2")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_clicks_are_enriched_joined_and_counted_while_poison_goes_to_dead_letters(
    topics: CommonSettings, enricher_proc: EnricherProcess,
) -> None:
    """Raw clicks come out enriched with the link's fields, bot kind and velocity; a poison record is
    dead-lettered with its reason while later clicks flow; per-link counts reach links.stats."""
    link = link_record("lnk_it_join01")
    await produce(topics, Topic.LINKS, [(b"sho.rt/" + link["code"].encode(), encode(Topic.LINKS, link))])
    # 25 clicks from one IP within a minute: above signals.toml's velocity_per_minute (20).
    humans = [raw_click(link, client_ip="81.2.69.160") for _ in range(25)]
    bot = raw_click(link, user_agent=UA_SLACK, client_ip="81.2.69.161")
    later = raw_click(link, client_ip="81.2.69.162")
    key = link["id"].encode()
    records = [(key, encode(Topic.CLICKS_RAW, r)) for r in [*humans, bot]]
    records.append((key, b"\xc3\x01not avro at all"))
    records.append((key, encode(Topic.CLICKS_RAW, later)))
    await produce(topics, Topic.CLICKS_RAW, records)

    wanted = {r["click_id"] for r in [*humans, bot, later]}
    async with TopicReader(topics, Topic.CLICKS_ENRICHED) as reader:
        out = await reader.read_until(lambda rs: wanted <= {r["click_id"] for r in rs}, 90, "enriched clicks")
    by_id = {r["click_id"]: r for r in out}
    first = by_id[humans[0]["click_id"]]
    assert (first["workspace_id"], first["tags"], first["campaign"]) == ("ws_it", ["launch", "q3"], "spring")
    assert (first["utm_source"], first["utm_medium"], first["utm_campaign"]) == (
        "newsletter", "email", "spring-24")
    assert first["link_created_ms"] == link["created_ms"]
    assert first["ip"] == "81.2.69.0"  # truncated by default
    assert first["is_bot"] is False
    assert "velocity" not in first["trust_signals"]
    assert by_id[bot["click_id"]]["bot_kind"] == "link_preview"
    assert by_id[bot["click_id"]]["is_bot"] is True
    assert "velocity" in by_id[humans[-1]["click_id"]]["trust_signals"]
    assert by_id[later["click_id"]]["country"] == "GB"

    async with TopicReader(topics, Topic.DEAD_LETTERS) as dead:
        letters = await dead.read_until(lambda rs: len(rs) >= 1, 30, "a dead letter")
    assert letters[0]["value"] == b"\xc3\x01not avro at all"
    assert letters[0]["service"] == "enricher"
    assert letters[0]["source_topic"] == topics.topic_prefix + "clicks.raw"
    assert letters[0]["reason"]

    async with TopicReader(topics, Topic.LINK_STATS) as stats:
        got = await stats.read_until(
            lambda rs: any(r["human_clicks"] + r["bot_clicks"] >= 27 for r in rs), 30, "link stats")
    final = max(got, key=lambda r: r["human_clicks"] + r["bot_clicks"])
    assert final["link_id"] == link["id"]
    assert (final["human_clicks"], final["bot_clicks"]) == (26, 1)

    port = int(enricher_proc.env["CLICKWIRE_METRICS_PORT"])
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/health")
        metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert health.status_code == 200, health.text
    assert health.json()["enriched"] >= 27
    assert 'clickwire_enricher_clicks_total{kind="bot"} 1.0' in metrics.text
    # every valid click took the spliced fast path; only the poison record fell back
    assert "clickwire_enricher_slow_path_total 1.0" in metrics.text


async def test_sigterm_stops_the_worker_cleanly(topics: CommonSettings, enricher_proc: EnricherProcess) -> None:
    """SIGTERM drains and exits 0 after the worker has processed clicks."""
    link = link_record("lnk_it_term01")
    click = raw_click(link)
    await produce(topics, Topic.CLICKS_RAW, [(link["id"].encode(), encode(Topic.CLICKS_RAW, click))])
    async with TopicReader(topics, Topic.CLICKS_ENRICHED) as reader:
        await reader.read_until(lambda rs: any(r["click_id"] == click["click_id"] for r in rs), 90, "the click")
    started = time.monotonic()
    assert enricher_proc.stop() == 0, enricher_proc.output()[-3000:]
    assert time.monotonic() - started < 20
