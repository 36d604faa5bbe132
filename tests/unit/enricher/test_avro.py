"""The hand-written raw_click decoder and enriched_click encoder against fastavro."""

from __future__ import annotations

from typing import Any

import pytest

from clickwire.codec import SINGLE_OBJECT_MARKER, codec_for
from clickwire.schemas import schema_json
from clickwire.topics import Topic
from services.enricher.avro import (
    ENRICHED_FIELDS,
    LINK_STATS_LAYOUT,
    L,
    S,
    Unsupported,
    decode_raw,
    encode_enriched,
    encode_link_stats,
)
from services.enricher.chain import Enricher, LinkInfo
from services.enricher.stream import ClickStream, Source
from tests.unit.enricher.conftest import load_bot_uas, load_browser_rows, raw_click

RAW = codec_for(Topic.CLICKS_RAW)
ENRICHED = codec_for(Topic.CLICKS_ENRICHED)
LINK = LinkInfo("ws_9", ("a", "ü", ""), "c1", "nl", None, "ca", None, "", 1_699_999_000_000)

EDGE_RAWS = [
    raw_click(),
    raw_click(referer="https://www.google.com/", purpose="prefetch", ch_ua='"Chromium";v="124"',
              ch_ua_mobile="?0", ch_ua_platform='"Windows"', destination=None, qr=True, status=301),
    raw_click(user_agent="", workspace_id="", query="a=1&ü=😀", domain="ßho.rt", accept_language=None),
    raw_click(ts_ms=2**62, status=2**31 - 1, client_ip="2001:db8::1", user_agent="x" * 300),
    raw_click(ts_ms=-1, status=-(2**31), code="日本語" * 40, redirector_id=""),
]


def _realistic() -> list[dict[str, Any]]:
    uas = [r["ua"] for r in load_browser_rows("browser_user_agents_sample.jsonl")][:150]
    uas += load_bot_uas("crawler_user_agents_sample.txt")[:50]
    return [raw_click(user_agent=ua, client_ip=f"{1 + i % 200}.{i % 256}.7.9", click_id=f"c{i}")
            for i, ua in enumerate(uas)]


@pytest.mark.parametrize("raw", EDGE_RAWS + _realistic()[::10])
def test_decode_raw_equals_fastavro(raw: dict[str, Any]) -> None:
    """The decoder returns exactly fastavro's record for realistic and edge-case clicks."""
    payload = RAW.encode(raw)
    assert payload[:2] == SINGLE_OBJECT_MARKER
    assert decode_raw(payload, len(RAW.header)) == RAW.decode(payload) == raw


@pytest.mark.parametrize("cut", [11, 20, -1])
def test_decode_raw_refuses_truncated_and_trailing_bytes(cut: int) -> None:
    """A cut body or bytes after the record are refused, so the codec can name the error."""
    payload = RAW.encode(raw_click())
    with pytest.raises(Unsupported):
        decode_raw(payload[:cut], len(RAW.header))
    with pytest.raises(Unsupported):
        decode_raw(payload + b"\x00", len(RAW.header))


def test_encode_enriched_is_byte_identical_to_fastavro(enricher: Enricher) -> None:
    """Every realistic and edge-case record encodes to fastavro's bytes, header included."""
    # EDGE_RAWS[3]'s ts_ms is past the visitor hash's calendar (a dead letter): the next test covers it.
    raws = [r for r in EDGE_RAWS if r["ts_ms"] < 2**50] + _realistic()
    checked = 0
    for i, raw in enumerate(raws):
        link = LINK if i % 2 else None
        record = enricher.enrich(raw, link, now_ms=1_700_000_000_123, velocity=i % 30)
        assert encode_enriched(ENRICHED.header, record) == ENRICHED.encode(record)
        checked += 1
    assert checked == len(raws) > 200


def test_encode_enriched_covers_nulls_large_ints_unicode_and_empty_arrays(enricher: Enricher) -> None:
    """Edge values a click can carry are encoded exactly like fastavro."""
    record = enricher.enrich(raw_click(), LINK, now_ms=0, velocity=0)
    record.update(tags=[], trust_signals=[], latitude=-0.0, longitude=1e308, asn=2**63 - 1,
                  link_created_ms=-(2**63), city="Zürich 😀", campaign=None, enriched_ms=2**40, ts_ms=2**62,
                  status=-(2**31))
    assert encode_enriched(ENRICHED.header, record) == ENRICHED.encode(record)


@pytest.mark.parametrize(("field", "value"), [
    ("status", 2**31), ("asn", "7"), ("is_bot", 1.5), ("latitude", 5), ("tags", "ab"), ("ip", None),
])
def test_encode_enriched_leaves_odd_values_to_fastavro(enricher: Enricher, field: str, value: Any) -> None:
    """Out-of-range or mistyped values are refused rather than written differently from fastavro."""
    record = enricher.enrich(raw_click(), None, now_ms=0, velocity=0)
    record[field] = value
    with pytest.raises(Unsupported):
        encode_enriched(ENRICHED.header, record)


def test_missing_or_extra_keys_fall_back_to_the_codec(enricher: Enricher) -> None:
    """A record with a defaulted field missing still encodes (through fastavro), an extra key fails."""
    stream = ClickStream(enricher)
    src = Source("clicks.raw", 0, 1)
    record = enricher.enrich(raw_click(), None, now_ms=0, velocity=0)
    del record["visitor_hash"]
    with pytest.raises(Unsupported):
        encode_enriched(ENRICHED.header, record)
    out = stream.encode(record, value=b"", src=src)
    assert ENRICHED.decode(out.value)["visitor_hash"] == ""


def test_field_order_matches_the_schema() -> None:
    """encode_enriched writes the fields in enriched_click.avsc's order."""
    schema = schema_json("enriched_click")
    assert isinstance(schema, dict)
    assert tuple(f["name"] for f in schema["fields"]) == ENRICHED_FIELDS


@pytest.mark.parametrize(("link_id", "human", "bot", "updated_ms"), [
    ("lnk_1", 0, 0, 0), ("l" * 200, 2**40, 63, 1_700_000_000_000), ("日本", 64, 2**63 - 1, -1),
])
def test_link_stats_encoding_is_byte_identical_to_fastavro(link_id: str, human: int, bot: int,
                                                           updated_ms: int) -> None:
    """links.stats records written by hand are fastavro's bytes, header included."""
    codec = codec_for(Topic.LINK_STATS)
    record = {"link_id": link_id, "human_clicks": human, "bot_clicks": bot, "updated_ms": updated_ms}
    assert encode_link_stats(codec.header, link_id, human, bot, updated_ms) == codec.encode(record)


def test_link_stats_layout_is_what_the_encoder_writes() -> None:
    """encode_link_stats writes link_stats.avsc's fields in its order."""
    assert LINK_STATS_LAYOUT == (("link_id", S), ("human_clicks", L), ("bot_clicks", L), ("updated_ms", L))
