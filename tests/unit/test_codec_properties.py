"""Properties of the Avro codec over generated raw clicks and generated damage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickwire.codec import AvroCodec, CodecError, TruncatedPayloadError

CODEC = AvroCodec("raw_click")

_LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_OPTIONAL_TEXT = st.none() | st.text()

raw_clicks = st.fixed_dictionaries(
    {
        "click_id": st.text(),
        "ts_ms": _LONG,
        "link_id": st.text(),
        "workspace_id": st.text(),
        "domain": st.text(),
        "code": st.text(),
        "method": st.sampled_from(["GET", "HEAD"]),
        "client_ip": st.ip_addresses().map(str) | st.just(""),
        "user_agent": st.text(),
        "referer": _OPTIONAL_TEXT,
        "accept_language": _OPTIONAL_TEXT,
        "purpose": _OPTIONAL_TEXT,
        "ch_ua": _OPTIONAL_TEXT,
        "ch_ua_mobile": _OPTIONAL_TEXT,
        "ch_ua_platform": _OPTIONAL_TEXT,
        "query": st.text(),
        "qr": st.booleans(),
        "status": _INT,
        "destination": _OPTIONAL_TEXT,
        "redirector_id": st.text(),
    }
)


@given(raw_clicks)
def test_decode_inverts_encode_for_any_raw_click(record: dict[str, Any]) -> None:
    """decode(encode(r)) == r for any raw click with valid strings, ints and nulls."""
    assert CODEC.decode(CODEC.encode(record)) == record


@given(raw_clicks, st.data())
def test_any_cut_of_a_payload_is_reported_as_truncated(record: dict[str, Any], data: st.DataObject) -> None:
    """Every strict prefix of a valid payload raises TruncatedPayloadError."""
    payload = CODEC.encode(record)
    cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    with pytest.raises(TruncatedPayloadError):
        CODEC.decode(payload[:cut])


@given(st.binary(max_size=300))
def test_arbitrary_body_bytes_raise_only_codec_errors(body: bytes) -> None:
    """Garbage after a valid header decodes or raises a CodecError, never another exception."""
    try:
        decoded = CODEC.decode(CODEC.header + body)
    except CodecError:
        return
    assert set(decoded) == {
        "click_id", "ts_ms", "link_id", "workspace_id", "domain", "code", "method", "client_ip",
        "user_agent", "referer", "accept_language", "purpose", "ch_ua", "ch_ua_mobile",
        "ch_ua_platform", "query", "qr", "status", "destination", "redirector_id",
    }  # fmt: skip
