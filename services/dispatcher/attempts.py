"""The attempt log: one webhook_attempt.avsc record per HTTP attempt, to ``webhooks.attempts``.

The sink copies the topic into ClickHouse, where ``GET /v1/webhooks/{id}/attempts`` pages through it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from clickwire.codec import codec_for
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

EXCERPT_BYTES = 256


def excerpt(body: bytes) -> str | None:
    """Return the first bytes of a response body as text, None when empty."""
    if not body:
        return None
    return body[:EXCERPT_BYTES].decode("utf-8", "replace")


class AttemptLog:
    """Publishes attempt records; each call returns the broker acknowledgement as a future."""

    def __init__(self, common: CommonSettings, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._topic = name(Topic.WEBHOOK_ATTEMPTS, common.topic_prefix)
        self._codec = codec_for(Topic.WEBHOOK_ATTEMPTS, common.schema_registry_url)

    async def record(self, *, event_id: str, subscription_id: str, attempt: int, status: int, latency_ms: float,
                     outcome: str, error_class: str | None, response: bytes = b"",
                     next_attempt_ms: int | None = None) -> asyncio.Future[Any]:
        """Queue one attempt record for sending and return its acknowledgement."""
        record = {
            "event_id": event_id, "subscription_id": subscription_id, "attempt": attempt,
            "ts_ms": int(time.time() * 1000), "status": status, "latency_ms": latency_ms, "outcome": outcome,
            "error_class": error_class, "response_excerpt": excerpt(response), "next_attempt_ms": next_attempt_ms,
        }
        fut: asyncio.Future[Any] = await self._producer.send(
            self._topic, self._codec.encode(record), key=subscription_id.encode()
        )
        return fut
