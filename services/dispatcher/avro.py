"""Hand-written Avro for the deliverer's hot path: outbox records in, attempt records out.

fastavro's generic reader and writer cost ~5 and ~6.5 us per record here, as much as signing a
delivery; both schemas are small and fixed, so the decoder and the encoder are written out field by
field (like services/enricher/avro.py). They only handle what they can do exactly: anything else
(another writer schema, the Confluent framing, a corrupt payload, a value of an unexpected type)
raises :class:`Unsupported` and the caller falls back to the topic's AvroCodec, which keeps its
errors and its schema resolution. Byte- and value-identical to fastavro
(tests/unit/dispatcher/test_avro.py).

The schemas are checked at import: a field added, removed or retyped fails loudly here instead of
producing wrong bytes.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from clickwire.avrobin import INT_MAX as _INT_MAX
from clickwire.avrobin import INT_MIN as _INT_MIN
from clickwire.avrobin import Unsupported as Unsupported  # re-exported: callers catch it from here
from clickwire.avrobin import checked_int as _i
from clickwire.avrobin import checked_long as _l
from clickwire.avrobin import optional_string as _os
from clickwire.avrobin import read_long
from clickwire.avrobin import string as _s
from clickwire.codec import SINGLE_OBJECT_MARKER, AvroCodec
from clickwire.schemas import SchemaJSON, schema_json

_DOUBLE = struct.Struct("<d")
_MS = {"type": "long", "logicalType": "timestamp-millis"}

# (name, type) in schema order, exactly as the .avsc files declare them (docs and defaults aside).
DELIVERY_FIELDS: Final = (
    ("event_id", "string"), ("subscription_id", "string"), ("event_type", "string"), ("created_ms", _MS),
    ("body", "bytes"), ("attempt", "int"), ("not_before_ms", _MS),
)
ATTEMPT_FIELDS: Final = (
    ("event_id", "string"), ("subscription_id", "string"), ("attempt", "int"), ("ts_ms", _MS),
    ("status", "int"), ("latency_ms", "double"), ("outcome", "string"), ("error_class", ["null", "string"]),
    ("response_excerpt", ["null", "string"]), ("next_attempt_ms", ["null", _MS]),
)


def _check(schema: SchemaJSON, expected: tuple[tuple[str, Any], ...]) -> None:
    assert isinstance(schema, dict)
    found = tuple((f["name"], f["type"]) for f in schema["fields"])
    if found != expected:
        raise NotImplementedError(f"services/dispatcher/avro.py does not match {schema['name']}: {found}")


_check(schema_json("webhook_delivery"), DELIVERY_FIELDS)
_check(schema_json("webhook_attempt"), ATTEMPT_FIELDS)


def fast_header(codec: AvroCodec) -> bytes | None:
    """The framing the fast path writes and reads for ``codec``; None when only the codec may (a registry)."""
    header = codec.header
    return header if header.startswith(SINGLE_OBJECT_MARKER) else None


def _bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    b = buf[pos]
    if b < 0x80:  # a length below 64: one byte
        if b & 1:
            raise Unsupported("negative length")
        n, pos = b >> 1, pos + 1
    else:
        n, pos = read_long(buf, pos)
        if n < 0:
            raise Unsupported("negative length")
    end = pos + n
    if end > len(buf):
        raise Unsupported("runs past the end")
    return buf[pos:end], end


def decode_delivery(header: bytes, payload: bytes) -> dict[str, Any]:
    """The webhook_delivery record in ``payload`` (framed with ``header``); Unsupported otherwise."""
    if not payload.startswith(header):
        raise Unsupported("another writer schema or framing")
    try:
        event_id, pos = _bytes(payload, len(header))
        subscription_id, pos = _bytes(payload, pos)
        event_type, pos = _bytes(payload, pos)
        created_ms, pos = read_long(payload, pos)
        body, pos = _bytes(payload, pos)
        attempt, pos = read_long(payload, pos)
        not_before_ms, pos = read_long(payload, pos)
        record = {
            "event_id": event_id.decode(), "subscription_id": subscription_id.decode(),
            "event_type": event_type.decode(), "created_ms": created_ms, "body": body, "attempt": attempt,
            "not_before_ms": not_before_ms,
        }
    except (IndexError, UnicodeDecodeError) as exc:
        raise Unsupported(str(exc)) from exc
    if pos != len(payload):
        raise Unsupported("bytes follow the record")
    if not _INT_MIN <= attempt <= _INT_MAX:
        raise Unsupported("attempt out of the int range")
    return record


def encode_attempt(header: bytes, event_id: str, subscription_id: str, attempt: int, ts_ms: int, status: int,
                   latency_ms: float, outcome: str, error_class: str | None, response_excerpt: str | None,
                   next_attempt_ms: int | None) -> bytes:
    """``header`` + the webhook_attempt Avro body of these values; Unsupported when fastavro must decide."""
    if type(latency_ms) is not float:
        raise Unsupported("latency_ms is not a float")
    try:
        return b"".join((
            header, _s(event_id), _s(subscription_id), _i(attempt), _l(ts_ms), _i(status),
            _DOUBLE.pack(latency_ms), _s(outcome), _os(error_class), _os(response_excerpt),
            b"\x00" if next_attempt_ms is None else b"\x02" + _l(next_attempt_ms),
        ))
    except (TypeError, AttributeError, UnicodeEncodeError) as exc:
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
