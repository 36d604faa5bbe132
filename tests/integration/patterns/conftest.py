"""Fixtures for the patterns service's integration tests: an in-process service, click and link builders."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaProducer

from clickwire.codec import codec_for
from clickwire.kafka import make_consumer, make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.patterns.cli import serve
from services.patterns.settings import PatternsSettings
from services.patterns.thresholds import encode_overrides


def click(link: dict[str, Any], *, ts_ms: int | None = None, country: str = "DE", ref: str = "direct",
          is_bot: bool = False, bot_kind: str = "none", trust: int = 95, signals: tuple[str, ...] = (),
          ip: str | None = None, asn: int = 3320, as_org: str = "DTAG") -> dict[str, Any]:
    """An enriched_click.avsc record of ``link`` (a link.avsc-shaped dict)."""
    now = int(time.time() * 1000) if ts_ms is None else ts_ms
    return {
        "click_id": str(uuid.uuid4()), "ts_ms": now, "link_id": link["id"], "workspace_id": link["workspace_id"],
        "domain": link["domain"], "code": link["code"], "method": "GET", "user_agent": "Mozilla/5.0",
        "referer": None, "accept_language": "en", "purpose": None, "ch_ua": None, "ch_ua_mobile": None,
        "ch_ua_platform": None, "query": "", "qr": False, "status": 302, "destination": link["destination"],
        "redirector_id": "r1", "ip": ip or f"198.51.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}",
        "tags": list(link["tags"]), "campaign": link["campaign"], "utm_source": None, "utm_medium": None,
        "utm_campaign": None, "utm_term": None, "utm_content": None, "link_created_ms": link["created_ms"],
        "country": country, "region": "", "city": "", "latitude": None, "longitude": None, "asn": asn,
        "as_org": as_org, "browser": "Firefox", "browser_version": "120", "os": "Linux", "os_version": "",
        "device_family": "Other", "device_type": "bot" if is_bot else "desktop", "referrer_host": "",
        "referrer_class": ref, "is_bot": is_bot, "bot_kind": bot_kind, "bot_name": "", "trust_score": trust,
        "trust_signals": list(signals), "visitor_hash": uuid.uuid4().hex, "enriched_ms": now,
    }


def link(workspace: str, *, code: str | None = None, destination: str = "https://example.com/",
         tags: tuple[str, ...] = (), campaign: str | None = None, blocked: bool = False,
         updated_ms: int | None = None) -> dict[str, Any]:
    """A link.avsc record."""
    now = int(time.time() * 1000)
    code = code or uuid.uuid4().hex[:8]
    return {
        "id": f"lnk_{code}", "workspace_id": workspace, "domain": "clk.test", "code": code,
        "destination": destination, "redirect_type": 302, "created_ms": now, "updated_ms": updated_ms or now,
        "expires_ms": None, "expired_url": None, "max_clicks": None, "tags": list(tags), "campaign": campaign,
        "utm_source": None, "utm_medium": None, "utm_campaign": None, "utm_term": None, "utm_content": None,
        "rules": [], "bot_policy": "redirect", "preview_title": None, "preview_description": None,
        "preview_image": None, "destination_trust": 100, "destination_flags": [], "blocked": blocked,
    }


@dataclass
class Kit:
    """A test's topics, a producer, and helpers to feed clicks/links/settings and read derived events."""

    common: CommonSettings
    producer: AIOKafkaProducer
    started: list[tuple[asyncio.Event, asyncio.Task[None]]] = field(default_factory=list)

    async def clicks(self, records: list[dict[str, Any]]) -> None:
        """Produce enriched clicks keyed by link id, in order, and wait for the broker."""
        codec = codec_for(Topic.CLICKS_ENRICHED)
        topic = name(Topic.CLICKS_ENRICHED, self.common.topic_prefix)
        for record in records:
            await self.producer.send(topic, codec.encode(record), key=record["link_id"].encode())
        await self.producer.flush()

    async def link(self, record: dict[str, Any]) -> None:
        """Produce a link version keyed by domain/code."""
        await self.producer.send_and_wait(name(Topic.LINKS, self.common.topic_prefix),
                                          codec_for(Topic.LINKS).encode(record),
                                          key=f"{record['domain']}/{record['code']}".encode())

    async def thresholds(self, workspace: str, overrides: dict[str, Any]) -> None:
        """Set a workspace's thresholds the way the API does."""
        record = encode_overrides(workspace, overrides, int(time.time() * 1000))
        await self.producer.send_and_wait(name(Topic.WORKSPACE_SETTINGS, self.common.topic_prefix),
                                          codec_for(Topic.WORKSPACE_SETTINGS).encode(record),
                                          key=workspace.encode())

    async def derived(self, until: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0,
                      settle_s: float = 0.0) -> list[dict[str, Any]]:
        """Read events.derived from the start until ``until`` holds (then ``settle_s`` more for extras)."""
        codec = codec_for(Topic.EVENTS_DERIVED)
        consumer = make_consumer(self.common, name(Topic.EVENTS_DERIVED, self.common.topic_prefix), group_id=None)
        await consumer.start()
        out: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout_s
            while not until(out):
                if time.monotonic() > deadline:
                    raise AssertionError(f"events.derived did not reach the expected state: {summary(out)}")
                batch = await consumer.getmany(timeout_ms=100)
                out += [codec.decode(r.value) for rs in batch.values() for r in rs]
            settle_until = time.monotonic() + settle_s
            while time.monotonic() < settle_until:
                batch = await consumer.getmany(timeout_ms=100)
                out += [codec.decode(r.value) for rs in batch.values() for r in rs]
        finally:
            await consumer.stop()
        return out

    async def start(self, **env: str) -> int:
        """Start the patterns service in this loop; return its health port once it runs."""
        base = {
            "CLICKWIRE_KAFKA_BOOTSTRAP": self.common.bootstrap,
            "CLICKWIRE_TOPIC_PREFIX": self.common.topic_prefix,
            "CLICKWIRE_HOME": str(self.common.home),
            "CLICKWIRE_METRICS_PORT": "0",
            "CLICKWIRE_WEBHOOK_ALLOW_NETS": "127.0.0.1/32",
            "CLICKWIRE_PATTERNS_COMMIT_INTERVAL": "0.2",
            "CLICKWIRE_PATTERNS_CHECK_INTERVAL": "0.2",
            "CLICKWIRE_PATTERNS_CHECK_TIMEOUT": "1",
        }
        base.update(env)
        settings = PatternsSettings.from_env(base)
        stop = asyncio.Event()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_ready(port: int) -> None:
            ready.set_result(port)

        task = asyncio.create_task(serve(settings, stop, on_ready))
        waiting: list[asyncio.Future[object]] = [task, ready]  # type: ignore[list-item]
        done, _ = await asyncio.wait(waiting, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        self.started.append((stop, task))
        return await ready

    async def stop_all(self) -> None:
        """Stop every service started, gracefully."""
        while self.started:
            stop, task = self.started.pop()
            stop.set()
            await asyncio.wait_for(task, 60)


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(type, entity kind, entity id, country or referrer) of each derived event, for messages."""
    return [(e["type"], e["entity_kind"], e["entity_id"], e["country"] or e["referrer_class"]) for e in events]


@pytest_asyncio.fixture(loop_scope="session")
async def kit(topics: CommonSettings) -> AsyncIterator[Kit]:
    """A producer on the test's topics; every service started is stopped at teardown."""
    producer = make_producer(topics, linger_ms=1)
    await producer.start()
    k = Kit(topics, producer)
    try:
        yield k
    finally:
        await k.stop_all()
        await producer.stop()


Starter = Callable[..., Awaitable[int]]
