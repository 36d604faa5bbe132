"""Sink benchmark: click -> queryable delay in ClickHouse (target p99 <= 2 s) and insert rows/s.

Run: .venv/bin/python bench/sink.py  (needs a broker: CLICKWIRE_KAFKA_BOOTSTRAP, default 127.0.0.1:9092)

Both phases use a BatchWriter in this process with the default settings (batch 5,000 records, flush
at most every 500 ms) on topics of their own (a unique prefix) and an embedded ClickHouse in a
scratch directory.
1. Delay: enriched clicks are produced at a steady RATE/s for SECONDS s while the writer runs; every
   100 ms ClickHouse is asked which of the pending clicks it holds. Delay = first seen - produced.
2. Throughput: TOTAL clicks are put on the topic first, then a writer with a new group reads them;
   rows/s = TOTAL / time until the last batch is committed (decode + insert + commit).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clickwire.clickhouse import ClickHouseStore, apply_migrations, open_store
from clickwire.codec import codec_for
from clickwire.kafka import ensure_topics, make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.sink.settings import SinkSettings
from services.sink.writer import BatchWriter

RATE = 1_000
SECONDS = 10
TOTAL = 100_000


def _click(ws: str, i: int, now_ms: int) -> dict[str, Any]:
    return {
        "click_id": str(uuid.uuid4()), "ts_ms": now_ms, "link_id": f"l{i % 50}", "workspace_id": ws,
        "domain": "clk.test", "code": f"c{i % 50}", "method": "GET",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        "referer": "https://www.google.com/", "accept_language": "en-US", "purpose": None, "ch_ua": None,
        "ch_ua_mobile": None, "ch_ua_platform": None, "query": "", "qr": False, "status": 302,
        "destination": "https://example.com/landing", "redirector_id": "r1", "ip": f"203.0.{i % 200}.0",
        "tags": ["a", "b"], "campaign": "spring", "utm_source": "news", "utm_medium": "email",
        "utm_campaign": "spring", "utm_term": None, "utm_content": None, "link_created_ms": now_ms - 3_600_000,
        "country": "DE", "region": "", "city": "", "latitude": None, "longitude": None, "asn": 3320,
        "as_org": "Deutsche Telekom AG", "browser": "Chrome", "browser_version": "126", "os": "Windows",
        "os_version": "10", "device_family": "Other", "device_type": "desktop", "referrer_host": "www.google.com",
        "referrer_class": "search", "is_bot": False, "bot_kind": "none", "bot_name": "", "trust_score": 100,
        "trust_signals": [], "visitor_hash": f"v{i}", "enriched_ms": now_ms,
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _delay(common: CommonSettings, store: ClickHouseStore) -> dict[str, Any]:
    ws = f"bench_{uuid.uuid4().hex[:8]}"
    settings = replace(SinkSettings.from_env({}), common=common, group_id=f"bench-{uuid.uuid4().hex[:6]}")
    writer = BatchWriter(settings, store)
    await writer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    codec = codec_for(Topic.CLICKS_ENRICHED)
    topic = name(Topic.CLICKS_ENRICHED, common.topic_prefix)
    producer = make_producer(common, linger_ms=1)
    await producer.start()
    sent: dict[str, float] = {}
    delays: list[float] = []

    async def produce() -> None:
        started = time.monotonic()
        for i in range(RATE * SECONDS):
            # Steady rate: wait for this click's slot (pacing, not waiting for a condition).
            await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
            click = _click(ws, i, int(time.time() * 1000))
            sent[click["click_id"]] = time.monotonic()
            await producer.send(topic, codec.encode(click), key=click["link_id"].encode())

    async def poll() -> None:
        deadline = time.monotonic() + SECONDS + 30
        seen: set[str] = set()
        while time.monotonic() < deadline and (len(seen) < RATE * SECONDS):
            await asyncio.sleep(0.1)
            pending_since = int(time.time() * 1000) - 30_000
            rows = await store.query(
                "SELECT click_id FROM clickwire.clicks WHERE workspace_id = {ws:String}"
                " AND ts_ms >= fromUnixTimestamp64Milli({since:Int64})", {"ws": ws, "since": pending_since})
            now = time.monotonic()
            for row in rows:
                cid = row["click_id"]
                if cid not in seen and cid in sent:
                    seen.add(cid)
                    delays.append(now - sent[cid])

    try:
        await asyncio.gather(produce(), poll())
    finally:
        await producer.stop()
        stop.set()
        await task
    n = RATE * SECONDS
    return {"rate_per_s": RATE, "clicks": n, "queryable": len(delays),
            "p50_s": round(_pct(delays, 0.5), 3), "p99_s": round(_pct(delays, 0.99), 3),
            "max_s": round(max(delays), 3), "target_p99_s": 2.0, "met": _pct(delays, 0.99) <= 2.0 and len(delays) == n}


async def _throughput(common: CommonSettings, store: ClickHouseStore) -> dict[str, Any]:
    ws = f"bench_{uuid.uuid4().hex[:8]}"
    # Topics of its own, so the new group does not re-read (and re-check) the delay phase's clicks.
    common = await _fresh_topics(common)
    codec = codec_for(Topic.CLICKS_ENRICHED)
    topic = name(Topic.CLICKS_ENRICHED, common.topic_prefix)
    producer = make_producer(common, linger_ms=20)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in range(TOTAL):
            click = _click(ws, i, now + i)
            await producer.send(topic, codec.encode(click), key=click["link_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    settings = replace(SinkSettings.from_env({}), common=common, group_id=f"bench-{uuid.uuid4().hex[:6]}")
    writer = BatchWriter(settings, store)
    started = time.monotonic()
    await writer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        while True:
            committed = sum(o for tp, o in writer.committed().items() if tp.topic == topic)
            if committed >= TOTAL:
                break
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await task
    rows = await store.query("SELECT uniqExact(click_id) AS n FROM clickwire.clicks WHERE workspace_id = {ws:String}",
                             {"ws": ws})
    return {"records": TOTAL, "seconds": round(elapsed, 2), "rows_per_s": round(TOTAL / elapsed),
            "stored": rows[0]["n"], "batch_max": settings.batch_max}


async def _fresh_topics(common: CommonSettings) -> CommonSettings:
    common = replace(common, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    await ensure_topics(common, [Topic.CLICKS_ENRICHED, Topic.LINKS, Topic.WEBHOOK_ATTEMPTS, Topic.DEAD_LETTERS])
    return common


async def _main(report: dict[str, Any]) -> None:
    common = await _fresh_topics(CommonSettings.from_env())
    with tempfile.TemporaryDirectory(prefix="clickwire-bench-sink-") as scratch:
        store = await open_store(None, Path(scratch))
        try:
            await apply_migrations(store)
            delay = await _delay(common, store)
            throughput = await _throughput(common, store)
        finally:
            await store.close()
    report["sink"] = {"queryable_delay": delay, "insert_throughput": throughput, "cpus": os.cpu_count()}


def run(report: dict[str, Any]) -> None:
    """Measure click -> queryable delay and writer rows/s; results go to report["sink"]."""
    asyncio.run(_main(report))


if __name__ == "__main__":
    from clickwire.logs import configure

    configure("bench-sink", "warning")
    out: dict[str, Any] = {}
    run(out)
    print(json.dumps(out, indent=2))
