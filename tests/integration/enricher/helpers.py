"""Running `clickwire enricher` as a subprocess and talking to its topics, for the integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from clickwire.codec import codec_for
from clickwire.kafka import make_producer
from clickwire.settings import REPO_ROOT, CommonSettings
from clickwire.topics import Topic, name, spec

UA_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/124.0.0.0 Safari/537.36")
UA_SLACK = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"


def raw_click(link: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A complete raw_click record for a link."""
    raw: dict[str, Any] = {
        "click_id": str(uuid.uuid4()), "ts_ms": int(time.time() * 1000), "link_id": link["id"],
        "workspace_id": link["workspace_id"], "domain": link["domain"], "code": link["code"],
        "method": "GET", "client_ip": "81.2.69.142", "user_agent": UA_CHROME, "referer": None,
        "accept_language": "en", "purpose": None, "ch_ua": None, "ch_ua_mobile": None,
        "ch_ua_platform": None, "query": "", "qr": False, "status": 302,
        "destination": link["destination"], "redirector_id": "test",
    }
    raw.update(overrides)
    return raw


def link_record(link_id: str, **overrides: Any) -> dict[str, Any]:
    """A link record (link.avsc) with campaign, tags and utm fields set."""
    now = int(time.time() * 1000)
    record: dict[str, Any] = {
        "id": link_id, "workspace_id": "ws_it", "domain": "sho.rt", "code": link_id[-6:],
        "destination": "https://example.com/", "created_ms": now - 3_600_000, "updated_ms": now,
        "tags": ["launch", "q3"], "campaign": "spring", "utm_source": "newsletter", "utm_medium": "email",
        "utm_campaign": "spring-24", "utm_term": None, "utm_content": None,
    }
    record.update(overrides)
    return record


class EnricherProcess:
    """`clickwire enricher` in a subprocess with its own CLICKWIRE_HOME."""

    def __init__(self, common: CommonSettings, home: Path, **env: str) -> None:
        self.common = common
        self.home = home
        self.env = {
            **os.environ,
            "CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap,
            "CLICKWIRE_TOPIC_PREFIX": common.topic_prefix,
            "CLICKWIRE_HOME": str(home),
            "CLICKWIRE_METRICS_PORT": "0",
            "CLICKWIRE_LOG_LEVEL": "warning",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "enricher.log"

    def start(self) -> None:
        """Start the process (not waiting for it to be ready)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from clickwire.cli import main; main()", "enricher"],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no drain, no commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        """What the process wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def produce(common: CommonSettings, topic: Topic, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    """Produce (key, value) pairs and wait until the broker has them."""
    producer = make_producer(common)
    await producer.start()
    try:
        futures = [await producer.send(name(topic, common.topic_prefix), value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def encode(topic: Topic, record: dict[str, Any]) -> bytes:
    """The Avro payload of a record for a topic."""
    return codec_for(topic).encode(record)


class TopicReader:
    """Reads a topic from the beginning (no group), decoding values with the topic's codec."""

    def __init__(self, common: CommonSettings, topic: Topic) -> None:
        self.common = common
        self.topic = name(topic, common.topic_prefix)
        self.codec = codec_for(topic)
        self.partitions = spec(topic).partitions
        self.records: list[dict[str, Any]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.common.bootstrap, group_id=None,
                                          enable_auto_commit=False, fetch_max_wait_ms=50)
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def read_until(self, done: Any, timeout_s: float, what: str) -> list[dict[str, Any]]:
        """Poll until done(records) holds; fail naming `what` after the deadline."""
        assert self._consumer is not None
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; "
                                     f"have {len(self.records)} records")
            batches = await self._consumer.getmany(timeout_ms=200)
            for msgs in batches.values():
                self.records.extend(self.codec.decode(m.value) for m in msgs if m.value is not None)
        return self.records


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
