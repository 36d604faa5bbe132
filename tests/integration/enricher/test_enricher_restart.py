"""SIGKILL of the enricher mid-stream, then a restart: every click comes out at least once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from tests.integration.enricher.helpers import (
    EnricherProcess,
    TopicReader,
    encode,
    link_record,
    produce,
    raw_click,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_sigkill_mid_stream_and_restart_loses_no_click(topics: CommonSettings, tmp_path: Path) -> None:
    """Clicks produced before, during and after a SIGKILL all reach clicks.enriched (duplicates allowed)."""
    links = [link_record(f"lnk_it_kill{i:02d}") for i in range(8)]
    clicks = [raw_click(links[i % len(links)], client_ip=f"10.1.{i % 250}.{i % 7}") for i in range(3000)]
    encoded = [(c["link_id"].encode(), encode(Topic.CLICKS_RAW, c)) for c in clicks]
    proc = EnricherProcess(topics, tmp_path / "home", CLICKWIRE_ENRICHER_SESSION_TIMEOUT="6")
    proc.start()
    try:
        async with TopicReader(topics, Topic.CLICKS_ENRICHED) as reader:
            await produce(topics, Topic.CLICKS_RAW, encoded[:1000])
            await reader.read_until(lambda rs: len(rs) >= 200, 90, "the first enriched clicks")
            feeder = asyncio.create_task(produce(topics, Topic.CLICKS_RAW, encoded[1000:2000]))
            await reader.read_until(lambda rs: len(rs) >= 1100, 60, "clicks after the feed started")
            proc.kill()  # mid-stream: no drain, no final commit
            await feeder
            await produce(topics, Topic.CLICKS_RAW, encoded[2000:])
            proc.start()
            wanted = {c["click_id"] for c in clicks}
            out = await reader.read_until(lambda rs: wanted <= {r["click_id"] for r in rs}, 120,
                                          "every click after the restart")
    finally:
        proc.stop()
    assert wanted <= {r["click_id"] for r in out}
    assert len(out) >= len(clicks)
