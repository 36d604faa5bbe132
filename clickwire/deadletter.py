"""Poison messages are a type: :class:`InvalidMessage` goes to the dead-letter topic with its reason.

A service that cannot process a record never drops it and never stops on it: it wraps the
record in an :class:`InvalidMessage`, hands it to :class:`DeadLetters`, and moves on. The record is
published untouched, with where it came from and why, to ``deadletters``; a counter is bumped
and a warning is logged at most once a second per reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from clickwire.codec import codec_for
from clickwire.logs import RateLimited
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

log = structlog.get_logger(__name__)
DEAD_LETTERS = Counter("clickwire_dead_letters_total", "Records sent to the dead-letter topic",
                       ["service", "error_class"])


@dataclass
class InvalidMessage(Exception):
    """A record that cannot be processed, with where it came from and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error_class: str
    reason: str

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}: {self.error_class}: {self.reason}"


class DeadLetters:
    """Publishes invalid messages to the dead-letter topic."""

    def __init__(self, common: CommonSettings, producer: AIOKafkaProducer, service: str) -> None:
        self._producer = producer
        self._service = service
        self._topic = name(Topic.DEAD_LETTERS, common.topic_prefix)
        self._codec = codec_for(Topic.DEAD_LETTERS, common.schema_registry_url)
        self._limiter = RateLimited(1.0)

    async def send(self, bad: InvalidMessage) -> None:
        """Publish one invalid message and wait until the broker has it."""
        record = {
            "source_topic": bad.topic, "partition": bad.partition, "offset": bad.offset,
            "key": bad.key, "value": bad.value, "reason": bad.reason[:2000],
            "error_class": bad.error_class, "service": self._service, "ts_ms": int(time.time() * 1000),
        }
        await self._producer.send_and_wait(self._topic, self._codec.encode(record), key=bad.topic.encode())
        DEAD_LETTERS.labels(self._service, bad.error_class).inc()
        if self._limiter.allow(bad.error_class):
            log.warning("record sent to dead letters", source=str(bad), suppressed=self._limiter.suppressed)
