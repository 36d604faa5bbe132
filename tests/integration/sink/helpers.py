"""Generated enriched clicks, producing them, and running a BatchWriter in-process for sink tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from clickwire.codec import codec_for
from clickwire.kafka import make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.sink.settings import SinkSettings
from services.sink.writer import BatchWriter


def enriched_click(workspace: str, i: int = 0, **fields: Any) -> dict[str, Any]:
    """One enriched click (every field of enriched_click.avsc) in `workspace`, overridable by keyword."""
    now = int(time.time() * 1000)
    click: dict[str, Any] = {
        "click_id": str(uuid.uuid4()), "ts_ms": now, "link_id": f"l{i % 3}", "workspace_id": workspace,
        "domain": "clk.test", "code": f"c{i % 3}", "method": "GET", "user_agent": "Mozilla/5.0",
        "referer": None, "accept_language": "en", "purpose": None, "ch_ua": None, "ch_ua_mobile": None,
        "ch_ua_platform": None, "query": "", "qr": False, "status": 302, "destination": "https://example.com/",
        "redirector_id": "r1", "ip": "203.0.113.0", "tags": ["t"], "campaign": "spring",
        "utm_source": None, "utm_medium": None, "utm_campaign": None, "utm_term": None, "utm_content": None,
        "link_created_ms": now - 60_000, "country": "DE", "region": "", "city": "", "latitude": None,
        "longitude": None, "asn": 3320, "as_org": "DTAG", "browser": "Firefox", "browser_version": "120",
        "os": "Linux", "os_version": "", "device_family": "Other", "device_type": "desktop",
        "referrer_host": "", "referrer_class": "direct", "is_bot": False, "bot_kind": "none", "bot_name": "",
        "trust_score": 100, "trust_signals": [], "visitor_hash": f"v{i}", "enriched_ms": now + 3,
    }
    click.update(fields)
    return click


def clicks(workspace: str, n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n clicks spread over a few links, with a random but reproducible mix of fields."""
    rng = random.Random(seed)
    return [
        enriched_click(workspace, i, country=rng.choice(["DE", "US", "FR"]),
                       is_bot=rng.random() < 0.2, visitor_hash=f"v{rng.randrange(n // 2 + 1)}")
        for i in range(n)
    ]


async def produce(common: CommonSettings, topic: Topic, records: Sequence[dict[str, Any] | bytes | None],
                  keys: Sequence[bytes | None] | None = None, partition: int | None = None) -> None:
    """Encode (unless bytes/None) and produce records to a logical topic, waiting for the broker."""
    codec = codec_for(topic, common.schema_registry_url)
    physical = name(topic, common.topic_prefix)
    producer = make_producer(common)
    await producer.start()
    try:
        for index, record in enumerate(records):
            value = record if record is None or isinstance(record, bytes) else codec.encode(record)
            key = keys[index] if keys is not None else (
                str(record.get("link_id", index)).encode() if isinstance(record, dict) else b"k")
            await producer.send(physical, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def sink_settings(common: CommonSettings, **overrides: Any) -> SinkSettings:
    """Sink settings on the test's topics with a unique group and a short flush interval."""
    base = SinkSettings.from_env({})
    return replace(base, common=common, group_id=f"sink-{uuid.uuid4().hex[:8]}", flush_ms=100,
                   retry_max_s=0.5, **overrides)


@contextlib.asynccontextmanager
async def running_writer(settings: SinkSettings, store: Any) -> AsyncIterator[BatchWriter]:
    """A started BatchWriter running in a task; stopped (flush, commit, leave) on exit, pass or fail."""
    writer = BatchWriter(settings, store)
    await writer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield writer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll `check` until it is true; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def count_clicks(store: Any, workspace: str) -> dict[str, int]:
    """count(), uniqExact(click_id) and count() FINAL of a workspace's clicks."""
    rows = await store.query(
        "SELECT (SELECT count() FROM clickwire.clicks WHERE workspace_id = {ws:String}) AS plain,"
        " (SELECT uniqExact(click_id) FROM clickwire.clicks WHERE workspace_id = {ws:String}) AS uniq,"
        " (SELECT count() FROM clickwire.clicks FINAL WHERE workspace_id = {ws:String}) AS final",
        {"ws": workspace})
    return {k: int(v) for k, v in rows[0].items()}
