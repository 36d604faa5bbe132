"""The attempt log: one webhook_attempt.avsc record per HTTP attempt, to ``webhooks.attempts``.

The sink copies the topic into ClickHouse, where ``GET /v1/webhooks/{id}/attempts`` pages through it.
One record per delivery makes this the deliverer's busiest producer path, so records are encoded by
hand (services.dispatcher.avro, falling back to the codec), each subscription's partition is
computed once with the producer's own partitioner, and records are handed to the producer in
batches per partition.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder

from clickwire.codec import codec_for
from clickwire.kafka import key_partitioner
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.dispatcher.avro import Unsupported, encode_attempt, fast_header

EXCERPT_BYTES = 256
_PARTITIONS_TTL_S = 60.0  # partitions are only ever added; new ones are picked up within this
_AWAY_RETRY_S = 0.1  # pause before handing a batch the broker did not take to the producer again


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
        self._header = fast_header(self._codec)
        self._partitions: list[int] = []
        self._partitions_at = float("-inf")
        self._partition_of: Callable[[bytes], int] = lambda key: 0  # set by _refresh_partitions()
        # Per partition, batches not yet handed to the producer (the last one filling) and the future
        # their records return; and the task handing them over, while there are any.
        self._open: dict[int, deque[tuple[BatchBuilder, asyncio.Future[Any]]]] = {}
        self._closing = False  # set by flush(): from then on a broker that does not take a batch fails it
        self._senders: dict[int, asyncio.Task[None]] = {}

    async def _refresh_partitions(self) -> None:
        """Look the topic's partitions up again (at most every _PARTITIONS_TTL_S)."""
        partitions = sorted(await self._producer.partitions_for(self._topic))
        if partitions != self._partitions:
            self._partitions = partitions
            self._partition_of = key_partitioner(partitions)
        self._partitions_at = time.monotonic()

    def encode(self, *, event_id: str, subscription_id: str, attempt: int, ts_ms: int, status: int,
               latency_ms: float, outcome: str, error_class: str | None, response: bytes = b"",
               next_attempt_ms: int | None = None) -> bytes:
        """Return the framed webhook_attempt record (the same bytes the topic's codec writes)."""
        response_excerpt = excerpt(response)
        if self._header is not None:
            try:
                return encode_attempt(self._header, event_id, subscription_id, attempt, ts_ms, status,
                                      latency_ms, outcome, error_class, response_excerpt, next_attempt_ms)
            except Unsupported:
                pass  # the codec decides (and names the field that does not fit)
        return self._codec.encode({
            "event_id": event_id, "subscription_id": subscription_id, "attempt": attempt, "ts_ms": ts_ms,
            "status": status, "latency_ms": latency_ms, "outcome": outcome, "error_class": error_class,
            "response_excerpt": response_excerpt, "next_attempt_ms": next_attempt_ms,
        })

    async def record(self, *, event_id: str, subscription_id: str, attempt: int, status: int, latency_ms: float,
                     outcome: str, error_class: str | None, response: bytes = b"",
                     next_attempt_ms: int | None = None) -> asyncio.Future[Any]:
        """Queue one attempt record for sending and return its acknowledgement.

        Records go to the producer as batches per partition (aiokafka's send_batch), one at a time:
        a per-record send() costs a future, a partitioner call and an accumulator lookup, which at
        thousands of deliveries per second is a tenth of the deliverer's work.
        """
        value = self.encode(event_id=event_id, subscription_id=subscription_id, attempt=attempt,
                            ts_ms=int(time.time() * 1000), status=status, latency_ms=latency_ms, outcome=outcome,
                            error_class=error_class, response=response, next_attempt_ms=next_attempt_ms)
        key = subscription_id.encode()
        if time.monotonic() - self._partitions_at > _PARTITIONS_TTL_S:
            await self._refresh_partitions()
        partition = self._partition_of(key)
        waiting = self._open.get(partition)
        if waiting is None:
            waiting = self._open[partition] = deque()
        if not waiting or waiting[-1][0].append(key=key, value=value, timestamp=None) is None:
            waiting.append((self._producer.create_batch(), asyncio.get_running_loop().create_future()))
            if waiting[-1][0].append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"an attempt record of {len(value)} bytes does not fit in a producer batch")
        if partition not in self._senders:
            # Starts on the next turn of the loop, so every record queued in this turn goes in one batch.
            self._senders[partition] = asyncio.create_task(self._send(partition))
        return waiting[-1][1]

    async def _send(self, partition: int) -> None:
        """Hand this partition's batches to the producer one at a time, while records keep coming."""
        waiting = self._open[partition]
        try:
            while waiting:
                builder, acked = waiting.popleft()
                try:
                    # Waits while the producer still holds this partition's previous batch: records
                    # queued meanwhile fill the next builder, as they would fill the producer's own.
                    ack = await self._producer.send_batch(builder, self._topic, partition=partition)
                except asyncio.CancelledError:
                    acked.cancel()
                    raise
                except KafkaTimeoutError as exc:
                    if self._closing:
                        acked.set_exception(exc)
                        continue
                    # The previous batch is still not on the broker (it is away: a restart, an outage).
                    # Keep this one and wait again, as a blocking send() would: failing it would stop
                    # the deliverer on every broker outage longer than the request timeout.
                    waiting.appendleft((builder, acked))
                    await asyncio.sleep(_AWAY_RETRY_S)
                    continue
                except Exception as exc:  # the waiters decide what a lost attempt record means
                    acked.set_exception(exc)
                    continue
                ack.add_done_callback(lambda done, acked=acked: _copy_outcome(done, acked))
        finally:
            del self._senders[partition]

    async def flush(self) -> None:
        """Hand every queued record to the producer (then ``producer.flush()`` waits for the broker).

        Called when stopping: a batch the broker does not take within the request timeout is failed
        then (its deliveries are not committed, so they are redone after the restart).
        """
        self._closing = True
        while self._senders:
            await asyncio.gather(*self._senders.values(), return_exceptions=True)


def _copy_outcome(done: asyncio.Future[Any], into: asyncio.Future[Any]) -> None:
    if into.done():
        return
    if done.cancelled():
        into.cancel()
    elif (exc := done.exception()) is not None:
        into.set_exception(exc)
    else:
        into.set_result(done.result())
