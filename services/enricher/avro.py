"""Hand-written Avro for the enricher's hot path: raw_click bodies in, enriched_click bodies out.

fastavro's generic reader and writer cost ~19 and ~39 us per click on the loaded dev machine, more
than the enrichment chain; the decoder walks a layout derived once from raw_click.avsc and the
encoder is written out field by field (~11 and ~14 us there).
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from clickwire.avrobin import INT_MAX as _INT_MAX
from clickwire.avrobin import INT_MIN as _INT_MIN
from clickwire.avrobin import LONG_MAX as _LONG_MAX
from clickwire.avrobin import LONG_MIN as _LONG_MIN
from clickwire.avrobin import SMALL as _SMALL
from clickwire.avrobin import Unsupported as Unsupported  # re-exported: callers catch it from here
from clickwire.avrobin import checked_int as _i
from clickwire.avrobin import checked_long as _l
from clickwire.avrobin import optional_string as _os
from clickwire.avrobin import read_long
from clickwire.avrobin import string as _s
from clickwire.avrobin import varint as _varint
from clickwire.schemas import SchemaJSON, schema_json

# Field kinds: S string, L long, INT int (32-bit range), B boolean, and the nullable / array forms.
S, L, INT, B, OS, OL, OD, AS = range(8)
_KINDS: Final[dict[str, int]] = {
    '"string"': S, '"long"': L, '"int"': INT, '"boolean"': B, '["null", "string"]': OS,
    '["null", "long"]': OL, '["null", "double"]': OD, '{"type": "array", "items": "string"}': AS,
}
_DOUBLE = struct.Struct("<d")
# Zigzag varints of 0..63 are one byte: every string length and most small numbers here.


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
                    n, pos = read_long(buf, pos)
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
                out[name], pos = read_long(buf, pos)
    except (IndexError, UnicodeDecodeError) as exc:
        raise Unsupported(str(exc)) from exc
    if pos != end_of_buf:
        raise Unsupported("bytes follow the record")
    return out


# scan_raw() is written for this field order; a schema change fails here, not with wrong bytes.
RAW_FIELDS: Final = (
    "click_id", "ts_ms", "link_id", "workspace_id", "domain", "code", "method", "client_ip", "user_agent",
    "referer", "accept_language", "purpose", "ch_ua", "ch_ua_mobile", "ch_ua_platform", "query", "qr", "status",
    "destination", "redirector_id",
)
if tuple(name for name, _ in RAW_LAYOUT) != RAW_FIELDS:
    raise NotImplementedError("raw_click.avsc changed: update scan_raw() in services/enricher/avro.py")


def scan_raw(buf: bytes, pos: int) -> tuple[Any, ...]:
    """The raw_click body at buf[pos], undecoded: its 20 values in RAW_FIELDS order (strings as bytes,
    null as None), then where workspace_id, domain, client_ip and user_agent start. Unsupported
    unless the body is exactly one record in canonical encoding, so copying its bytes equals
    re-encoding its values; the caller checks UTF-8."""
    # Written out field by field: a loop over RAW_LAYOUT (as decode_raw) costs twice as much.
    try:
        click_id, pos = _str(buf, pos)
        ts_ms, pos = _long(buf, pos)
        link_id, pos = _str(buf, pos)
        at_workspace = pos
        workspace_id, pos = _str(buf, pos)
        at_domain = pos
        domain, pos = _str(buf, pos)
        code, pos = _str(buf, pos)
        method, pos = _str(buf, pos)
        at_client_ip = pos
        client_ip, pos = _str(buf, pos)
        at_user_agent = pos
        user_agent, pos = _str(buf, pos)
        referer, pos = _nullable(buf, pos)
        accept_language, pos = _nullable(buf, pos)
        purpose, pos = _nullable(buf, pos)
        ch_ua, pos = _nullable(buf, pos)
        ch_ua_mobile, pos = _nullable(buf, pos)
        ch_ua_platform, pos = _nullable(buf, pos)
        query, pos = _str(buf, pos)
        qr = buf[pos]
        if qr > 1:
            raise Unsupported(f"boolean byte {qr} in qr")
        status, pos = _long(buf, pos + 1)
        if not _INT_MIN <= status <= _INT_MAX:
            raise Unsupported("status out of the int range")
        destination, pos = _nullable(buf, pos)
        redirector_id, pos = _str(buf, pos)
    except IndexError as exc:
        raise Unsupported(str(exc)) from exc
    if pos != len(buf):  # also catches a last length that ran past the end
        raise Unsupported("the record does not end where the payload does")
    return (click_id, ts_ms, link_id, workspace_id, domain, code, method, client_ip, user_agent, referer,
            accept_language, purpose, ch_ua, ch_ua_mobile, ch_ua_platform, query, qr == 1, status, destination,
            redirector_id, at_workspace, at_domain, at_client_ip, at_user_agent)


def _str(buf: bytes, pos: int) -> tuple[bytes, int]:
    # A length past the end shows as an IndexError on the next read or as the end check.
    b = buf[pos]
    if not b & 0x81:  # one-byte, non-negative length: most strings
        end = pos + 1 + (b >> 1)
        return buf[pos + 1:end], end
    n, pos = _read_canonical(buf, pos)
    if n < 0:
        raise Unsupported("negative string length")
    return buf[pos:pos + n], pos + n


def _nullable(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    branch = buf[pos]
    if branch == 0:
        return None, pos + 1
    if branch != 2:
        raise Unsupported(f"union branch {branch}")
    return _str(buf, pos + 1)


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    n, pos = _read_canonical(buf, pos)
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise Unsupported("long out of range")
    return n, pos


def _read_canonical(buf: bytes, pos: int) -> tuple[int, int]:
    # A varint with a trailing zero byte decodes fine but is not what an encoder writes.
    n, end = read_long(buf, pos)
    if end - pos > 1 and buf[end - 1] == 0:
        raise Unsupported("non-canonical varint")
    return n, end


def _ol(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + _l(value)


def _od(value: float | None) -> bytes:
    if value is None:
        return b"\x00"
    if type(value) is not float:
        raise Unsupported("not a float")
    return b"\x02" + _DOUBLE.pack(value)


def _as(value: Sequence[str]) -> bytes:
    if type(value) is not list and type(value) is not tuple:
        raise Unsupported("not a list")
    if not value:
        return b"\x00"
    return _varint(len(value)) + b"".join([_s(item) for item in value]) + b"\x00"


_BOOL: Final = {True: b"\x01", False: b"\x00"}
# The field order encode_enriched() writes, checked against enriched_click.avsc by the tests.
ENRICHED_FIELDS: Final = (
    "click_id", "ts_ms", "link_id", "workspace_id", "domain", "code", "method", "user_agent", "referer",
    "accept_language", "purpose", "ch_ua", "ch_ua_mobile", "ch_ua_platform", "query", "qr", "status",
    "destination", "redirector_id", "ip", "tags", "campaign", "utm_source", "utm_medium", "utm_campaign",
    "utm_term", "utm_content", "link_created_ms", "country", "region", "city", "latitude", "longitude", "asn",
    "as_org", "browser", "browser_version", "os", "os_version", "device_family", "device_type",
    "referrer_host", "referrer_class", "is_bot", "bot_kind", "bot_name", "trust_score", "trust_signals",
    "visitor_hash", "enriched_ms",
)


def encode_enriched(header: bytes, r: Mapping[str, Any]) -> bytes:
    """`header` + the enriched_click Avro body of `r`; Unsupported when fastavro must decide."""
    if len(r) != len(ENRICHED_FIELDS):
        raise Unsupported("record keys differ from the schema's fields")  # missing (defaults) or extra
    # Written out field by field (like services/redirector/rawclick.py): a loop over a layout
    # costs twice as much.
    try:
        return b"".join((
            header, _s(r["click_id"]), _l(r["ts_ms"]), _s(r["link_id"]), _s(r["workspace_id"]),
            _s(r["domain"]), _s(r["code"]), _s(r["method"]), _s(r["user_agent"]), _os(r["referer"]),
            _os(r["accept_language"]), _os(r["purpose"]), _os(r["ch_ua"]), _os(r["ch_ua_mobile"]),
            _os(r["ch_ua_platform"]), _s(r["query"]), _BOOL[r["qr"]], _i(r["status"]), _os(r["destination"]),
            _s(r["redirector_id"]), _s(r["ip"]), _as(r["tags"]), _os(r["campaign"]), _os(r["utm_source"]),
            _os(r["utm_medium"]), _os(r["utm_campaign"]), _os(r["utm_term"]), _os(r["utm_content"]),
            _ol(r["link_created_ms"]), _s(r["country"]), _s(r["region"]), _s(r["city"]), _od(r["latitude"]),
            _od(r["longitude"]), _l(r["asn"]), _s(r["as_org"]), _s(r["browser"]), _s(r["browser_version"]),
            _s(r["os"]), _s(r["os_version"]), _s(r["device_family"]), _s(r["device_type"]),
            _s(r["referrer_host"]), _s(r["referrer_class"]), _BOOL[r["is_bot"]], _s(r["bot_kind"]),
            _s(r["bot_name"]), _i(r["trust_score"]), _as(r["trust_signals"]), _s(r["visitor_hash"]),
            _l(r["enriched_ms"]),
        ))
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError) as exc:
        # KeyError: a key missing or a non-bool boolean; the others: a value of the wrong type.
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc


_ENCODE_KIND: Final[dict[int, Callable[[Any], bytes]]] = {
    S: _s, L: _l, INT: _i, B: _BOOL.__getitem__, OS: _os, OL: _ol, OD: _od, AS: _as,
}
_ENRICHED_KIND: Final = dict(ENRICHED_LAYOUT)


def encode_fields(r: Mapping[str, Any], names: Sequence[str]) -> bytes:
    """The Avro bytes of some enriched_click fields of `r` in the order given (one run of the body
    when `names` are consecutive in ENRICHED_FIELDS); Unsupported when fastavro must decide."""
    try:
        return b"".join([_ENCODE_KIND[_ENRICHED_KIND[name]](r[name]) for name in names])
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError) as exc:
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc


LINK_STATS_LAYOUT: Final = layout(schema_json("link_stats"))


def encode_link_stats(header: bytes, link_id: str, human_clicks: int, bot_clicks: int, updated_ms: int) -> bytes:
    """`header` + the link_stats Avro body; Unsupported when fastavro must decide."""
    try:
        return b"".join((header, _s(link_id), _l(human_clicks), _l(bot_clicks), _l(updated_ms)))
    except (TypeError, AttributeError, UnicodeEncodeError) as exc:
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
