"""The Avro codec: framing, fingerprints, schema evolution, errors and Confluent framing."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastavro import parse_schema, schemaless_writer

from clickwire import codec as codec_module
from clickwire import schemas
from clickwire.codec import (
    AvroCodec,
    MalformedPayloadError,
    SchemaMismatchError,
    SchemaRegistry,
    SchemaRegistryError,
    TruncatedPayloadError,
    UnknownSchemaError,
    codec_for,
    topic_schema_name,
)
from clickwire.topics import Topic

FIXTURES = Path(__file__).parent / "fixtures" / "avro"
# Fields raw_click gained after the raw_click_v0 fixture, all defaulting to null.
ADDED_AFTER_V0 = ("purpose", "ch_ua", "ch_ua_mobile", "ch_ua_platform")

RAW_CLICK: dict[str, Any] = {
    "click_id": "0190a0b2-7c1e-7abc-8def-0123456789ab",
    "ts_ms": 1720000000123,
    "link_id": "lnk_01J2ABCDEF",
    "workspace_id": "ws_01J2XYZ",
    "domain": "cw.link",
    "code": "launch24",
    "method": "GET",
    "client_ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0.0.0",
    "referer": "https://www.google.com/",
    "accept_language": "en-US,en;q=0.9",
    "purpose": None,
    "ch_ua": '"Chromium";v="126", "Google Chrome";v="126"',
    "ch_ua_mobile": "?0",
    "ch_ua_platform": '"Windows"',
    "query": "utm_source=newsletter&qr=1",
    "qr": True,
    "status": 302,
    "destination": "https://example.com/launch?utm_source=newsletter",
    "redirector_id": "redir-7f9c",
}

ENRICHED_CLICK: dict[str, Any] = {
    **{k: v for k, v in RAW_CLICK.items() if k != "client_ip"},
    "ip": "203.0.113.0",
    "tags": ["launch", "emea"],
    "campaign": "summer-launch",
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "launch24",
    "utm_term": None,
    "utm_content": "hero-button",
    "link_created_ms": 1719000000000,
    "country": "DE",
    "region": "BE",
    "city": "Berlin",
    "latitude": 52.52,
    "longitude": 13.405,
    "asn": 3320,
    "as_org": "Deutsche Telekom AG",
    "browser": "Chrome",
    "browser_version": "126.0.0",
    "os": "Windows",
    "os_version": "10",
    "device_family": "Other",
    "device_type": "desktop",
    "referrer_host": "www.google.com",
    "referrer_class": "search",
    "is_bot": False,
    "bot_kind": "none",
    "bot_name": "",
    "trust_score": 95,
    "trust_signals": ["new_visitor_burst"],
    "visitor_hash": "9f2c1e0b7a6d5c4b",
    "enriched_ms": 1720000000140,
}

SAMPLES: dict[str, dict[str, Any]] = {
    "raw_click": RAW_CLICK,
    "enriched_click": ENRICHED_CLICK,
    "link": {
        "id": "lnk_01J2ABCDEF",
        "workspace_id": "ws_01J2XYZ",
        "domain": "cw.link",
        "code": "launch24",
        "destination": "https://example.com/launch",
        "redirect_type": 302,
        "created_ms": 1719000000000,
        "updated_ms": 1719500000000,
        "expires_ms": None,
        "expired_url": None,
        "max_clicks": 10000,
        "tags": ["launch"],
        "campaign": "summer-launch",
        "utm_source": "newsletter",
        "utm_medium": None,
        "utm_campaign": None,
        "utm_term": None,
        "utm_content": None,
        "rules": [
            {
                "conditions": [{"field": "device_type", "op": "in", "values": ["mobile", "tablet"]}],
                "destination": "https://m.example.com/launch",
            }
        ],
        "bot_policy": "preview",
        "preview_title": "Launch",
        "preview_description": "Our summer launch",
        "preview_image": "https://example.com/og.png",
        "destination_trust": 80,
        "destination_flags": ["young_domain"],
        "blocked": False,
    },
    "api_key": {
        "id": "key_7Hq2",
        "workspace_id": "ws_01J2XYZ",
        "name": "ci",
        "hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "created_ms": 1720000000000,
        "revoked": False,
    },
    "link_claim": {
        "domain": "clk.example",
        "code": "spring",
        "link_id": "lnk_01J2ABCDEF",
        "workspace_id": "ws_01J2XYZ",
        "claimant": "api-1f3e",
        "ts_ms": 1720000000001,
    },
    "derived_event": {
        "event_id": "6f1c2b3a-9d8e-5f70-a1b2-c3d4e5f60718",
        "type": "milestone.reached",
        "workspace_id": "ws_01J2XYZ",
        "created_ms": 1720000000500,
        "detected_ms": 1720000000620,
        "entity_kind": "campaign",
        "entity_id": "spring",
        "link_id": "lnk_01J2ABCDEF",
        "domain": "clk.example",
        "tags": ["sale"],
        "campaign": "spring",
        "country": "",
        "referrer_class": "",
        "data_json": '{"threshold": 1000, "count": 1000}',
    },
    "workspace_settings": {
        "workspace_id": "ws_01J2XYZ",
        "events_json": '{"milestones": {"counts": [100, 1000]}}',
        "updated_ms": 1720000000700,
    },
    "link_stats": {
        "link_id": "lnk_01J2ABCDEF",
        "human_clicks": 1234,
        "bot_clicks": 56,
        "updated_ms": 1720000000999,
    },
    "webhook_subscription": {
        "id": "sub_01J2",
        "workspace_id": "ws_01J2XYZ",
        "url": "https://hooks.example.com/clicks",
        "description": "CRM sync",
        "event_types": ["click"],
        "filters": {
            "link_ids": [],
            "domains": ["cw.link"],
            "tags": [],
            "campaigns": ["summer-launch"],
            "countries": ["DE", "FR"],
            "device_types": [],
            "referrer_classes": [],
            "include_bots": False,
            "bot_kinds": [],
            "min_trust": 60,
        },
        "mode": "single",
        "batch_max": 100,
        "batch_ms": 1000,
        "enabled": True,
        "disabled_reason": None,
        "secrets": [
            {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "expires_ms": None},
            {"secret": "whsec_b2xkc2VjcmV0b2xkc2VjcmV0b2xkc2VjcmV0", "expires_ms": 1720086400000},
        ],
        "created_ms": 1719000000000,
        "updated_ms": 1719000000000,
    },
    "webhook_delivery": {
        "event_id": "evt_01J2",
        "subscription_id": "sub_01J2",
        "event_type": "click",
        "created_ms": 1720000000123,
        "body": b'{"type":"click","data":{"click_id":"0190a0b2"}}',
        "attempt": 2,
        "not_before_ms": 1720000005123,
    },
    "webhook_attempt": {
        "event_id": "evt_01J2",
        "subscription_id": "sub_01J2",
        "attempt": 1,
        "ts_ms": 1720000000200,
        "status": 503,
        "latency_ms": 12.5,
        "outcome": "retry",
        "error_class": "http_status",
        "response_excerpt": "Service Unavailable",
        "next_attempt_ms": 1720000005200,
    },
    "dead_letter": {
        "source_topic": "clicks.raw",
        "partition": 3,
        "offset": 987654321,
        "key": b"lnk_01J2ABCDEF",
        "value": b"\xc3\x01garbage",
        "reason": "unknown payload marker c301",
        "error_class": "MalformedPayloadError",
        "service": "enricher",
        "ts_ms": 1720000000300,
    },
}


def _fixture(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((FIXTURES / f"{name}.avsc").read_text())
    return schema


def _crc64_avro(data: bytes) -> int:
    """The Avro spec's reference Rabin fingerprint, written out as an oracle independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.fixture
def fresh_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate schemas registered at runtime to one test."""
    monkeypatch.setattr(schemas, "_registered", {})


@pytest.mark.parametrize("name", schemas.schema_names())
def test_every_schema_round_trips_a_realistic_record(name: str) -> None:
    """Each .avsc encodes a realistic record and decodes it back unchanged (ms fields stay ints)."""
    assert name in SAMPLES, f"add a realistic {name} record to SAMPLES"
    codec = AvroCodec(name)
    assert codec.decode(codec.encode(SAMPLES[name])) == SAMPLES[name]


def test_schema_names_lists_every_avsc_in_the_contract_directory() -> None:
    """schema_names() lists the .avsc stems of schemas/avro, sorted."""
    expected = sorted(p.stem for p in (Path(__file__).parents[2] / "schemas" / "avro").glob("*.avsc"))
    assert schemas.schema_names() == expected
    assert "raw_click" in expected


def test_schema_dir_env_override_changes_where_schemas_come_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLICKWIRE_SCHEMA_DIR points schema loading at another directory."""
    monkeypatch.setenv(schemas.SCHEMA_DIR_ENV, str(FIXTURES))
    assert schemas.schema_names() == ["raw_click_v0", "raw_click_v2"]
    loaded = schemas.load_schema("raw_click_v2")
    assert isinstance(loaded, dict)
    assert "edge_pop" in [f["name"] for f in loaded["fields"]]


def test_single_object_framing_matches_the_avro_spec_byte_for_byte() -> None:
    """A payload is C3 01, the little-endian CRC-64-AVRO of the canonical form, then the plain Avro body."""
    raw = schemas.schema_json("raw_click")
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(raw), RAW_CLICK)
    fp = _crc64_avro(schemas.canonical_form(raw).encode()).to_bytes(8, "little")
    assert AvroCodec("raw_click").encode(RAW_CLICK) == b"\xc3\x01" + fp + body.getvalue()


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        # Published values from apache/avro share/test/data/schema-tests.txt (signed 64-bit).
        ("int", 8247732601305521295),
        ("null", 7195948357588979594),
        ({"type": "record", "name": "foo", "fields": []}, -4824392279771201922),
    ],
)
def test_crc64_avro_fingerprint_reproduces_the_spec_test_vectors(schema: Any, expected: int) -> None:
    """fingerprint() gives the Avro project's published CRC-64-AVRO values, as little-endian wire bytes."""
    assert schemas.fingerprint(schema) == expected.to_bytes(8, "little", signed=True)
    assert _crc64_avro(schemas.canonical_form(schema).encode()) == expected % 2**64


def test_int_fingerprint_on_the_wire_is_8f5c393f1ad57572() -> None:
    """The schema "int" fingerprints to 0x7275d51a3f395c8f, sent as bytes 8f5c393f1ad57572."""
    assert schemas.fingerprint("int").hex() == "8f5c393f1ad57572"


@pytest.mark.parametrize("name", schemas.schema_names())
def test_schema_fingerprints_agree_with_the_spec_algorithm(name: str) -> None:
    """Every contract schema's fingerprint equals the spec's Rabin algorithm over its canonical form."""
    form = schemas.canonical_form(schemas.schema_json(name))
    assert '"doc"' not in form
    assert schemas.fingerprint(schemas.schema_json(name)) == _crc64_avro(form.encode()).to_bytes(8, "little")


def test_reader_with_newer_compatible_schema_reads_older_records() -> None:
    """A reader holding raw_click plus two defaulted fields reads records written with today's raw_click."""
    payload = AvroCodec("raw_click").encode(RAW_CLICK)
    decoded = AvroCodec("raw_click", reader_schema=_fixture("raw_click_v2")).decode(payload)
    assert decoded == {**RAW_CLICK, "sec_fetch_site": None, "edge_pop": ""}


@pytest.mark.usefixtures("fresh_registered")
def test_registered_older_writer_schema_decodes_into_the_current_schema() -> None:
    """Records written with an older schema decode once it is registered, missing fields taking defaults."""
    old = _fixture("raw_click_v0")
    old_record = {k: v for k, v in RAW_CLICK.items() if k not in ADDED_AFTER_V0}
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(old), old_record)
    payload = b"\xc3\x01" + schemas.fingerprint(old) + body.getvalue()
    codec = AvroCodec("raw_click")
    with pytest.raises(UnknownSchemaError):
        codec.decode(payload)
    assert schemas.register_writer_schema(old) == schemas.fingerprint(old)
    assert codec.decode(payload) == {**old_record, **dict.fromkeys(ADDED_AFTER_V0)}


def test_reader_that_cannot_resolve_the_writer_raises_schema_mismatch() -> None:
    """A reader with a new field that has no default cannot read older records: SchemaMismatchError."""
    reader = _fixture("raw_click_v2")
    reader["fields"].append({"name": "required_new", "type": "string"})
    payload = AvroCodec("raw_click").encode(RAW_CLICK)
    with pytest.raises(SchemaMismatchError):
        AvroCodec("raw_click", reader_schema=reader).decode(payload)


def test_unknown_fingerprint_raises_unknown_schema_naming_it() -> None:
    """A payload whose fingerprint matches no known schema raises UnknownSchemaError carrying the hex."""
    payload = bytearray(AvroCodec("raw_click").encode(RAW_CLICK))
    payload[2:10] = bytes.fromhex("0123456789abcdef")
    with pytest.raises(UnknownSchemaError, match="0123456789abcdef") as info:
        AvroCodec("raw_click").decode(bytes(payload))
    assert info.value.fingerprint == "0123456789abcdef"


def test_payload_of_another_schema_raises_schema_mismatch() -> None:
    """A link_stats payload given to the raw_click codec fails with SchemaMismatchError, not garbage."""
    payload = AvroCodec("link_stats").encode(SAMPLES["link_stats"])
    with pytest.raises(SchemaMismatchError):
        AvroCodec("raw_click").decode(payload)


_PAYLOAD = AvroCodec("raw_click").encode(RAW_CLICK)


@pytest.mark.parametrize(
    "cut",
    [0, 1, 2, 5, 9, 10, 11, 40, len(_PAYLOAD) // 2, len(_PAYLOAD) - 1],
    ids=["empty", "in-marker", "no-fp", "mid-fp", "fp-less-1", "header", "body-1", "body-40", "half", "last"],
)
def test_truncated_payload_raises_truncated(cut: int) -> None:
    """A payload cut in the marker, the fingerprint or the body raises TruncatedPayloadError."""
    with pytest.raises(TruncatedPayloadError):
        AvroCodec("raw_click").decode(_PAYLOAD[:cut])


@pytest.mark.parametrize(
    "payload",
    [b"\xc3\x02" + _PAYLOAD[2:], b'{"click_id": "x"}', b"\x01" + _PAYLOAD[1:], b"\x7f"],
    ids=["bad-version", "json", "bad-first-byte", "one-odd-byte"],
)
def test_wrong_marker_raises_malformed_not_truncated(payload: bytes) -> None:
    """A payload without a known marker raises MalformedPayloadError, not TruncatedPayloadError."""
    with pytest.raises(MalformedPayloadError) as info:
        AvroCodec("raw_click").decode(payload)
    assert not isinstance(info.value, TruncatedPayloadError)


def test_bytes_after_the_record_raise_malformed() -> None:
    """Trailing bytes after a complete record mean the payload is not what the writer produced."""
    with pytest.raises(MalformedPayloadError, match="1 bytes follow"):
        AvroCodec("raw_click").decode(_PAYLOAD + b"\x00")


def test_corrupt_union_branch_raises_malformed() -> None:
    """A body whose union index names no branch raises MalformedPayloadError."""
    codec = AvroCodec("dead_letter")
    payload = bytearray(codec.encode(SAMPLES["dead_letter"]))
    # Header, source_topic (1-byte length + 10 bytes), partition 3 (1 byte), offset 987654321 (5-byte varint).
    key_union_at = 10 + 1 + len(b"clicks.raw") + 1 + 5
    assert payload[key_union_at] == 0x02  # branch 1 ("bytes"), zigzag-encoded
    payload[key_union_at] = 0x0A  # branch 5: does not exist
    with pytest.raises(MalformedPayloadError) as info:
        codec.decode(bytes(payload))
    assert not isinstance(info.value, TruncatedPayloadError)


def test_encode_fills_defaults_for_missing_optional_fields() -> None:
    """Fields with defaults may be left out on encode; they decode as their defaults."""
    required = {k: RAW_CLICK[k] for k in ("click_id", "ts_ms", "link_id", "workspace_id", "domain", "code")}
    record = {**required, "method": "GET", "client_ip": "", "user_agent": "", "status": 404}
    record["redirector_id"] = "redir-1"
    codec = AvroCodec("raw_click")
    decoded = codec.decode(codec.encode(record))
    assert decoded["query"] == ""
    assert decoded["referer"] is None
    assert decoded["qr"] is False


def test_encode_missing_required_field_names_it() -> None:
    """Encoding a record without a required field raises SchemaMismatchError naming that field."""
    record = {k: v for k, v in RAW_CLICK.items() if k != "click_id"}
    with pytest.raises(SchemaMismatchError, match="click_id") as info:
        AvroCodec("raw_click").encode(record)
    assert info.value.field == "click_id"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "302"}, "status"),
        ({"referer": 5}, "referer"),
        ({"referrer": "https://typo.example"}, "referrer"),
    ],
    ids=["wrong-type", "wrong-union-type", "unknown-key"],
)
def test_encode_wrong_or_unknown_field_names_it(change: dict[str, Any], field: str) -> None:
    """A field of the wrong type, or a key the schema lacks, raises SchemaMismatchError naming it."""
    with pytest.raises(SchemaMismatchError) as info:
        AvroCodec("raw_click").encode({**RAW_CLICK, **change})
    assert info.value.field == field


def test_topic_schema_name_reads_topics_toml() -> None:
    """topic_schema_name returns the schema declared for a logical topic in deploy/topics.toml."""
    assert topic_schema_name("clicks_raw") == "raw_click"
    assert topic_schema_name("webhook_retry") == "webhook_delivery"
    with pytest.raises(ValueError, match="no_such_topic"):
        topic_schema_name("no_such_topic")


def test_codec_for_returns_one_cached_codec_per_topic() -> None:
    """codec_for gives the same codec object for a topic each call, built on the topic's schema."""
    codec = codec_for("clicks_enriched")
    assert codec is codec_for("clicks_enriched")
    assert codec.writer_schema_name == "enriched_click"
    assert codec is not codec_for("clicks_raw")
    assert codec_for(Topic.CLICKS_RAW) is codec_for("clicks_raw")


# --- Confluent framing through a schema registry (request shaping only: MockTransport) ---


class FakeRegistry:
    """Just enough of the Confluent Schema Registry REST API to check what the client sends."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.by_id: dict[int, str] = {}
        self.fail_with: int | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_with is not None:
            return httpx.Response(self.fail_with, json={"error_code": 50001, "message": "boom"})
        if request.method == "POST" and request.url.path.endswith("/versions"):
            schema = json.loads(request.content)["schema"]
            for schema_id, known in self.by_id.items():
                if known == schema:
                    return httpx.Response(200, json={"id": schema_id})
            schema_id = 40 + len(self.by_id)
            self.by_id[schema_id] = schema
            return httpx.Response(200, json={"id": schema_id})
        if request.method == "GET" and request.url.path.startswith("/schemas/ids/"):
            schema_id = int(request.url.path.rsplit("/", 1)[1])
            if schema_id not in self.by_id:
                return httpx.Response(404, json={"error_code": 40403, "message": "Schema not found"})
            return httpx.Response(200, json={"schema": self.by_id[schema_id]})
        return httpx.Response(405)


@pytest.fixture
def fake_registry() -> FakeRegistry:
    """A fresh in-memory registry per test."""
    return FakeRegistry()


@pytest.fixture
def registry(fake_registry: FakeRegistry) -> Iterator[SchemaRegistry]:
    """A SchemaRegistry client wired to the fake through httpx.MockTransport."""
    client = SchemaRegistry("http://registry.test:8081/", transport=httpx.MockTransport(fake_registry.handle))
    yield client
    client.close()


def test_registry_registration_request_is_shaped_like_confluents(
    registry: SchemaRegistry, fake_registry: FakeRegistry
) -> None:
    """Registering POSTs {"schema": <avsc as a JSON string>} to /subjects/<subject>/versions."""
    codec = AvroCodec("raw_click", registry=registry, subject="clicks.raw-value")
    (request,) = fake_registry.requests
    assert request.method == "POST"
    assert request.url.path == "/subjects/clicks.raw-value/versions"
    assert request.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert json.loads(json.loads(request.content)["schema"]) == schemas.schema_json("raw_click")
    assert codec.schema_id == 40


def test_confluent_framing_is_magic_then_big_endian_id(registry: SchemaRegistry) -> None:
    """With a registry, payloads are 00 + 4-byte big-endian schema id + the Avro body, and round trip."""
    codec = AvroCodec("raw_click", registry=registry, subject="clicks.raw-value")
    payload = codec.encode(RAW_CLICK)
    assert payload[:5] == b"\x00\x00\x00\x00\x28"
    assert payload[5:] == AvroCodec("raw_click").encode(RAW_CLICK)[10:]
    assert codec.decode(payload) == RAW_CLICK


def test_registry_caches_registrations_and_fetches(
    registry: SchemaRegistry, fake_registry: FakeRegistry
) -> None:
    """Each schema is registered once and each unseen id fetched once per process."""
    writer = AvroCodec("raw_click", registry=registry, subject="clicks.raw-value")
    AvroCodec("raw_click", registry=registry, subject="clicks.raw-value")
    assert len(fake_registry.requests) == 1
    fake_registry.by_id[7] = json.dumps(_fixture("raw_click_v0"))
    old_record = {k: v for k, v in RAW_CLICK.items() if k not in ADDED_AFTER_V0}
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(_fixture("raw_click_v0")), old_record)
    payload = b"\x00" + (7).to_bytes(4, "big") + body.getvalue()
    assert writer.decode(payload)["ch_ua"] is None
    assert writer.decode(payload)["click_id"] == RAW_CLICK["click_id"]
    gets = [r for r in fake_registry.requests if r.method == "GET"]
    assert [r.url.path for r in gets] == ["/schemas/ids/7"]


def test_unknown_registry_id_raises_unknown_schema(registry: SchemaRegistry) -> None:
    """An id the registry answers 404 for raises UnknownSchemaError carrying the id."""
    codec = AvroCodec("raw_click", registry=registry, subject="clicks.raw-value")
    with pytest.raises(UnknownSchemaError, match="999") as info:
        codec.decode(b"\x00" + (999).to_bytes(4, "big") + b"\x00")
    assert info.value.schema_id == 999


def test_confluent_payload_without_registry_raises_unknown_schema() -> None:
    """A codec without a registry cannot resolve a Confluent schema id: UnknownSchemaError with the id."""
    with pytest.raises(UnknownSchemaError) as info:
        AvroCodec("raw_click").decode(b"\x00\x00\x00\x01\x02" + _PAYLOAD[10:])
    assert info.value.schema_id == 258


def test_registry_errors_raise_schema_registry_error(
    registry: SchemaRegistry, fake_registry: FakeRegistry
) -> None:
    """A registry answering 5xx makes codec construction fail with SchemaRegistryError."""
    fake_registry.fail_with = 500
    with pytest.raises(SchemaRegistryError, match="500"):
        AvroCodec("raw_click", registry=registry, subject="clicks.raw-value")


def test_codec_for_with_registry_uses_the_topic_name_subject(
    monkeypatch: pytest.MonkeyPatch, registry: SchemaRegistry, fake_registry: FakeRegistry
) -> None:
    """codec_for with a registry URL registers under <physical topic name>-value."""
    monkeypatch.setattr(codec_module, "_registry_for", lambda url: registry)
    codec_module._cached_codec.cache_clear()
    try:
        codec = codec_for("clicks_raw", "http://registry.test:8081")
    finally:
        codec_module._cached_codec.cache_clear()
    assert [r.url.path for r in fake_registry.requests] == ["/subjects/clicks.raw-value/versions"]
    assert codec.header == b"\x00" + (40).to_bytes(4, "big")
