"""Helpers for redirector integration tests: real redirector processes, links on the topic, clicks read back."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from clickwire.codec import codec_for
from clickwire.kafka import make_producer
from clickwire.links import Link
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name, spec

DOMAIN = "go.test"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_link(code: str, destination: str = "https://example.com/landing", **kw: Any) -> Link:
    """A link on the test domain with a fresh id."""
    now = int(time.time() * 1000)
    return Link(id=str(uuid.uuid4()), workspace_id="ws_test", domain=kw.pop("domain", DOMAIN), code=code,
                destination=destination, created_ms=now, updated_ms=now, **kw)


async def put_links(common: CommonSettings, *links: Link, delete: tuple[str, ...] = ()) -> None:
    """Write links (and tombstones for "domain/code" keys) to the links topic and wait for the acks."""
    producer = make_producer(common)
    await producer.start()
    try:
        codec = codec_for(Topic.LINKS, common.schema_registry_url)
        topic = name(Topic.LINKS, common.topic_prefix)
        for link in links:
            await producer.send_and_wait(topic, codec.encode(link.to_avro()), key=link.key.encode())
        for key in delete:
            await producer.send_and_wait(topic, None, key=key.encode())
    finally:
        await producer.stop()


async def read_clicks(common: CommonSettings, want: int, timeout_s: float = 20.0,
                      idle_s: float = 0.0) -> list[dict[str, Any]]:
    """Read clicks.raw from the beginning until `want` records (then `idle_s` more for extras) or the deadline."""
    codec = codec_for(Topic.CLICKS_RAW, common.schema_registry_url)
    topic = name(Topic.CLICKS_RAW, common.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        parts = range(spec(Topic.CLICKS_RAW).partitions)  # the topics fixture created them as declared
        consumer.assign([TopicPartition(topic, p) for p in parts])
        deadline = time.monotonic() + timeout_s
        extra_until: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    rec = codec.decode(r.value)
                    rec["_key"] = r.key
                    rec["_partition"] = r.partition
                    out.append(rec)
            if len(out) >= want:
                if extra_until is None:
                    extra_until = time.monotonic() + idle_s
                if time.monotonic() >= extra_until:
                    break
    finally:
        await consumer.stop()
    return out


@dataclass
class Redirector:
    """A `clickwire redirector` process of our own."""

    proc: subprocess.Popen[bytes]
    port: int
    home: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM and wait; kill if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_redirector(common: CommonSettings, home: Path, *, extra: dict[str, str] | None = None,
                     port: int | None = None, wait: bool = True) -> Redirector:
    """Start a redirector on a free port with its own home; wait until /_/health answers."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKWIRE_")}
    env |= {
        "CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap, "CLICKWIRE_TOPIC_PREFIX": common.topic_prefix,
        "CLICKWIRE_HOME": str(home), "CLICKWIRE_REDIRECTOR_PORT": str(port),
        "CLICKWIRE_KAFKA_CONNECT_TIMEOUT": "10", "CLICKWIRE_LOG_LEVEL": "info",
    } | (extra or {})
    log = home / f"redirector-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clickwire", "redirector"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    r = Redirector(proc, port, home, log, env)
    if wait:
        wait_healthy(r)
    return r


def wait_healthy(r: Redirector, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll /_/health until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if r.proc.poll() is not None:
            raise AssertionError(f"redirector exited with {r.proc.returncode}:\n{r.logs()[-3000:]}")
        try:
            resp = httpx.get(f"{r.url}/_/health", timeout=1)
            if resp.status_code == 200:
                return dict(resp.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"redirector not healthy in {timeout_s} s:\n{r.logs()[-3000:]}")


@pytest.fixture
def redirectors(tmp_path: Path) -> Iterator[list[Redirector]]:
    """A list tests append started redirectors to; every one is stopped at teardown, pass or fail."""
    started: list[Redirector] = []
    yield started
    for r in started:
        r.stop()


async def poll(check: Any, timeout_s: float, interval_s: float = 0.02) -> Any:
    """Call `check()` until it returns something truthy or the deadline passes; return the last result."""
    deadline = time.monotonic() + timeout_s
    result = check()
    while not result and time.monotonic() < deadline:
        await asyncio.sleep(interval_s)
        result = check()
    return result


@dataclass
class Load:
    """What a load run saw: click ids answered with a redirect, statuses, connection errors."""

    redirected: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    sent: int = 0


async def drive(url: str, host: str, codes: list[str], rate: float, until: asyncio.Event,
                load: Load, concurrency: int = 32) -> None:
    """Send GETs at `rate` per second (spread over `concurrency` workers) until `until` is set."""
    import aiohttp

    interval = concurrency / rate
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(i: int) -> None:
            next_at = time.monotonic() + i * interval / concurrency
            n = i
            while not until.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
                code = codes[n % len(codes)]
                n += 1
                load.sent += 1
                try:
                    async with session.get(f"{url}/{code}", headers={"host": host},
                                           allow_redirects=False, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        await resp.read()
                        load.statuses[resp.status] = load.statuses.get(resp.status, 0) + 1
                        if 300 <= resp.status < 400:
                            load.redirected.append(resp.headers["x-click-id"])
                except (aiohttp.ClientError, TimeoutError):
                    load.errors += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
