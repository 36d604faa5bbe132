"""Avro binary primitives for the hand-written hot-path codecs (redirector, enricher, dispatcher).

Both codecs are checked byte for byte against fastavro in their tests; this module only holds
the pieces they share.
"""

from __future__ import annotations

from typing import Final


class Unsupported(ValueError):
    """The fast path cannot decode/encode this exactly; the caller falls back to fastavro."""


INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

# Zigzag varints of small non-negative ints (string lengths, status codes), precomputed.
SMALL: Final = tuple(bytes([2 * n]) for n in range(64))
# And of those below 4,096 (two bytes): record lengths and offsets in Kafka batches, longer strings.
_TWO_BYTES: Final = tuple(bytes([(2 * n) & 0x7F | 0x80, (2 * n) >> 7]) for n in range(64, 4096))


def varint(n: int) -> bytes:
    """Zigzag varint of an Avro int or long (Kafka's record fields use the same encoding)."""
    if 0 <= n < 64:
        return SMALL[n]
    if 64 <= n < 4096:
        return _TWO_BYTES[n - 64]
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(value: str) -> bytes:
    """An Avro string: length then UTF-8 bytes."""
    data = value.encode()
    n = len(data)
    return (SMALL[n] if n < 64 else varint(n)) + data


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the zigzag varint at ``pos``; return it and the position after it."""
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


def checked_long(value: object) -> bytes:
    """An Avro long, refusing (Unsupported) what fastavro would write differently or refuse."""
    if type(value) is not int or not LONG_MIN <= value <= LONG_MAX:
        raise Unsupported("not an int in the long range")
    return varint(value)


def checked_int(value: object) -> bytes:
    """An Avro int, refusing (Unsupported) what is not an int in the int range."""
    if type(value) is not int or not INT_MIN <= value <= INT_MAX:
        raise Unsupported("not an int in the int range")
    return varint(value)


def optional_string(value: str | None) -> bytes:
    """An Avro ["null", "string"] union value."""
    return b"\x00" if value is None else b"\x02" + string(value)
