"""The hand-written webhook_delivery decoder and webhook_attempt encoder against fastavro."""

from __future__ import annotations

from typing import Any

import pytest

from clickwire.codec import SINGLE_OBJECT_MARKER, codec_for
from clickwire.topics import Topic
from services.dispatcher.avro import Unsupported, decode_delivery, encode_attempt

OUTBOX = codec_for(Topic.WEBHOOK_OUTBOX)
ATTEMPTS = codec_for(Topic.WEBHOOK_ATTEMPTS)


def delivery(**overrides: Any) -> dict[str, Any]:
    """A realistic outbox record, with overrides."""
    record: dict[str, Any] = {
        "event_id": "evt_0b9f7c523f4e4a4e8d0c5a2b8e7d1c33", "subscription_id": "wh_01HZX3J5Q2K8M9",
        "event_type": "click", "created_ms": 1_714_000_000_123,
        "body": b'{"id":"evt_1","type":"click","data":{"click":{"country":"FR"}}}', "attempt": 0,
        "not_before_ms": 0,
    }
    return record | overrides


DELIVERIES = [
    delivery(),
    delivery(attempt=7, not_before_ms=1_714_000_900_000, event_type="link.deleted"),
    delivery(body=b"", event_id="", subscription_id="", event_type=""),
    delivery(body=b"[" + b"x" * 70_000 + b"]", event_id="evt_" + "ü" * 40),  # multi-byte lengths
    delivery(created_ms=-1, not_before_ms=2**63 - 1, attempt=2**31 - 1),
    delivery(created_ms=-(2**63), attempt=-(2**31), subscription_id="日本語"),
]


@pytest.mark.parametrize("record", DELIVERIES)
def test_decode_delivery_equals_fastavro(record: dict[str, Any]) -> None:
    """The decoder returns exactly fastavro's record, edge values included."""
    payload = OUTBOX.encode(record)
    assert payload[:2] == SINGLE_OBJECT_MARKER
    assert decode_delivery(OUTBOX.header, payload) == OUTBOX.decode(payload) == record


@pytest.mark.parametrize("cut", [10, 11, 40, -1])
def test_decode_delivery_refuses_cut_and_trailing_bytes(cut: int) -> None:
    """A cut body or bytes after the record are refused, so the codec can name the error."""
    payload = OUTBOX.encode(delivery())
    with pytest.raises(Unsupported):
        decode_delivery(OUTBOX.header, payload[:cut])
    with pytest.raises(Unsupported):
        decode_delivery(OUTBOX.header, payload + b"\x00")


def test_decode_delivery_refuses_other_framing() -> None:
    """A payload of another writer schema (or the Confluent framing) is left to the codec."""
    payload = OUTBOX.encode(delivery())
    with pytest.raises(Unsupported):
        decode_delivery(ATTEMPTS.header, payload)
    with pytest.raises(Unsupported):
        decode_delivery(OUTBOX.header, b"\x00\x00\x00\x00\x01" + payload[10:])


def test_decode_delivery_refuses_bad_utf8() -> None:
    """An event id that is not UTF-8 is refused rather than decoded differently from fastavro."""
    payload = OUTBOX.encode(delivery(event_id="a"))
    at = payload.index(b"a", len(OUTBOX.header))
    with pytest.raises(Unsupported):
        decode_delivery(OUTBOX.header, payload[:at] + b"\xff" + payload[at + 1:])


def attempt(**overrides: Any) -> dict[str, Any]:
    """A realistic attempt record, with overrides."""
    record: dict[str, Any] = {
        "event_id": "evt_0b9f7c523f4e4a4e8d0c5a2b8e7d1c33", "subscription_id": "wh_01HZX3J5Q2K8M9", "attempt": 1,
        "ts_ms": 1_714_000_000_456, "status": 204, "latency_ms": 1.734, "outcome": "success", "error_class": None,
        "response_excerpt": None, "next_attempt_ms": None,
    }
    return record | overrides


ATTEMPT_RECORDS = [
    attempt(),
    attempt(status=503, outcome="retry", error_class="http_status", response_excerpt="busy ü",
            next_attempt_ms=1_714_000_005_000, attempt=2),
    attempt(status=0, outcome="dead", error_class="timeout", latency_ms=10_000.0, attempt=8),
    attempt(response_excerpt="x" * 256, latency_ms=0.0, status=2**31 - 1, attempt=64, next_attempt_ms=0),
    attempt(event_id="", subscription_id="", outcome="", latency_ms=float("inf"), ts_ms=-5, status=-1,
            next_attempt_ms=-(2**63)),
]


@pytest.mark.parametrize("record", ATTEMPT_RECORDS)
def test_encode_attempt_is_byte_identical_to_fastavro(record: dict[str, Any]) -> None:
    """Every field combination encodes to fastavro's bytes, header included."""
    assert encode_attempt(ATTEMPTS.header, **record) == ATTEMPTS.encode(record)


@pytest.mark.parametrize("bad", [{"latency_ms": 2}, {"status": 2**31}, {"ts_ms": "1"}, {"attempt": 1.0},
                                 {"event_id": b"evt"}, {"error_class": 3}, {"next_attempt_ms": 2**63}])
def test_encode_attempt_refuses_values_fastavro_must_judge(bad: dict[str, Any]) -> None:
    """A value of an unexpected type or range is refused, so the codec decides (and names the field)."""
    with pytest.raises(Unsupported):
        encode_attempt(ATTEMPTS.header, **attempt(**bad))
