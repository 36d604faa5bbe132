"""Hand-written Avro for the enricher's hot path: raw_click bodies in, enriched_click bodies out.

fastavro's generic reader and writer cost ~10 and ~23 us per click, more than the whole
enrichment chain; these walk a layout derived once from the .avsc files instead (~4 and ~8 us).
They only handle what they can do exactly: ClickStream (stream.py) falls back to the topic's
AvroCodec for any payload or record they refuse, so errors, other writer schemas, the Confluent
framing and default values keep the codec's behaviour. Byte- and value-identical to fastavro
(tests/unit/enricher/test_avro.py, on realistic and edge-case records).

A schema type not listed in `_KINDS` fails at import, so a schema change cannot silently
produce wrong bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, Final

from clickwire.schemas import SchemaJSON, schema_json

# Field kinds: S string, L long/int, I int (32-bit range), B boolean, and the nullable / array forms.
S, L, I, B, OS, OL, OD, AS = range(8)
_KINDS: Final[dict[str, int]] = {
    '"string"': S, '"long"': L, '"int"': I, '"boolean"': B, '["null", "string"]': OS,
    '["null", "long"]': OL, '["null", "double"]': OD, '{"type": "array", "items": "string"}': AS,
}
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_DOUBLE = struct.Struct("<d")
# Zigzag varints of 0..63 are one byte: every string length and most small numbers here.
_SMALL: Final = tuple(bytes([2 * n]) for n in range(64))


class Unsupported(ValueError):
    """The fast path cannot decode/encode this exactly; the caller falls back to fastavro."""


def _kind(avro_type: Any) -> int:
    avro_type = [_plain(t) for t in avro_type] if isinstance(avro_type, list) else _plain(avro_type)
    text = json.dumps(avro_type)
    try:
        return _KINDS[text]
    except KeyError:
        raise NotImplementedError(f"services/enricher/avro.py has no fast path for Avro type {text}") from None


def _plain(avro_type: Any) -> Any:
    # clickwire reads and writes time logical types as plain ints (clickwire/codec.py)
    if isinstance(avro_type, dict) and avro_type.get("type") in ("long", "int") and "logicalType" in avro_type:
        return avro_type["type"]
    return avro_type


def layout(schema: SchemaJSON) -> tuple[tuple[str, int], ...]:
    """(field name, kind) in the record schema's field order."""
    assert isinstance(schema, dict)
    return tuple((f["name"], _kind(f["type"])) for f in schema["fields"])


RAW_LAYOUT: Final = layout(schema_json("raw_click"))
ENRICHED_LAYOUT: Final = layout(schema_json("enriched_click"))


def _varint(n: int) -> bytes:
    if 0 <= n < 64:
        return _SMALL[n]
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len(n: int) -> bytes:
    return _SMALL[n] if n < 64 else _varint(n)


def decode_raw(buf: bytes, pos: int) -> dict[str, Any]:
    """The raw_click record whose Avro body starts at buf[pos]; Unsupported if it is not exactly one."""
    out: dict[str, Any] = {}
    end_of_buf = len(buf)
    try:
        for name, kind in RAW_LAYOUT:
            if kind >= OS:  # the raw schema's only union is ["null", "string"]
                branch = buf[pos]
                pos += 1
                if branch == 0:
                    out[name] = None
                    continue
                if branch != 2 or kind != OS:
                    raise Unsupported(f"union branch {branch} in {name}")
                kind = S
            if kind == S:
                b = buf[pos]
                if b < 0x80:
                    if b & 1:
                        raise Unsupported(f"negative length in {name}")
                    n = b >> 1
                    pos += 1
                else:
                    n, pos = _read_long(buf, pos)
                    if n < 0:
                        raise Unsupported(f"negative length in {name}")
                end = pos + n
                if end > end_of_buf:
                    raise Unsupported(f"{name} runs past the end")
                out[name] = buf[pos:end].decode()
                pos = end
            elif kind == B:
                b = buf[pos]
                if b > 1:
                    raise Unsupported(f"boolean byte {b} in {name}")
                out[name] = b == 1
                pos += 1
            else:
                out[name], pos = _read_long(buf, pos)
    except (IndexError, UnicodeDecodeError) as exc:
        raise Unsupported(str(exc)) from exc
    if pos != end_of_buf:
        raise Unsupported("bytes follow the record")
    return out


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise Unsupported("varint longer than 10 bytes")
    return (n >> 1) ^ -(n & 1), pos


def _str(value: Any) -> bytes:
    if type(value) is not str:
        raise Unsupported("not a str")
    data = value.encode()
    return _len(len(data)) + data


def encode_enriched(header: bytes, record: Mapping[str, Any]) -> bytes:
    """`header` + the enriched_click Avro body of `record`; Unsupported if fastavro must decide."""
    if len(record) != len(ENRICHED_LAYOUT):
        raise Unsupported("record keys differ from the schema's fields")  # missing (defaults) or extra
    parts = [header]
    add = parts.append
    try:
        for name, kind in ENRICHED_LAYOUT:
            v = record[name]
            if kind == S:
                add(_str(v))
            elif kind == OS:
                add(b"\x00" if v is None else b"\x02" + _str(v))
            elif kind == L or kind == I:
                if type(v) is not int or not (_INT_MIN <= v <= _INT_MAX if kind == I else _LONG_MIN <= v <= _LONG_MAX):
                    raise Unsupported(f"{name} is not an int in range")
                add(_varint(v))
            elif kind == B:
                if v is True:
                    add(b"\x01")
                elif v is False:
                    add(b"\x00")
                else:
                    raise Unsupported(f"{name} is not a bool")
            elif kind == OL:
                if v is None:
                    add(b"\x00")
                elif type(v) is int and _LONG_MIN <= v <= _LONG_MAX:
                    add(b"\x02" + _varint(v))
                else:
                    raise Unsupported(f"{name} is not an int in range")
            elif kind == OD:
                if v is None:
                    add(b"\x00")
                elif type(v) is float:
                    add(b"\x02" + _DOUBLE.pack(v))
                else:
                    raise Unsupported(f"{name} is not a float")
            else:  # AS
                if type(v) is not list and type(v) is not tuple:
                    raise Unsupported(f"{name} is not a list")
                if v:
                    add(_varint(len(v)))
                    for item in v:
                        add(_str(item))
                add(b"\x00")
    except (KeyError, UnicodeEncodeError) as exc:
        raise Unsupported(str(exc)) from exc
    return b"".join(parts)
