"""The glue between Kafka records and the enrichment chain: decode -> enrich -> encode.

No Kafka and no Faust here, so the stream (app.py) and `clickwire enrich` run exactly the same
steps, and tests can drive them with bytes. Every failure a record can cause is raised as an
:class:`~clickwire.deadletter.InvalidMessage`, which the stream publishes to the dead letters.

Safe to retry: every function is pure given its inputs (the velocity count and the link are
inputs), so re-processing a replayed raw click yields the same enriched record but enriched_ms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clickwire.codec import AvroCodec, CodecError, codec_for
from clickwire.deadletter import InvalidMessage
from clickwire.topics import Topic
from services.enricher.avro import Unsupported, decode_raw, encode_enriched
from services.enricher.chain import Enricher, LinkInfo
from services.enricher.fastpath import FastPath

# Fields a raw click must carry with a non-empty value to be enriched at all.
REQUIRED = ("click_id", "link_id")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from, for the dead-letter record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Enriched:
    """One enriched click, ready to produce."""

    key: bytes
    value: bytes
    link_id: str
    is_bot: bool


def _invalid(src: Source, value: bytes, error_class: str, reason: str) -> InvalidMessage:
    return InvalidMessage(src.topic, src.partition, src.offset, src.key, value, error_class, reason)


class ClickStream:
    """Decodes raw clicks, enriches them and encodes enriched clicks with the topics' codecs."""

    def __init__(self, enricher: Enricher, registry_url: str | None = None) -> None:
        self.enricher = enricher
        self.raw_codec: AvroCodec = codec_for(Topic.CLICKS_RAW, registry_url)
        self.enriched_codec: AvroCodec = codec_for(Topic.CLICKS_ENRICHED, registry_url)
        self._raw_header = self.raw_codec.header
        self._enriched_header = self.enriched_codec.header
        # What the stream runs first: the same records, spliced (falls back to process()).
        self.fast = FastPath(enricher, self._raw_header, self._enriched_header)

    def decode(self, value: bytes | None, src: Source) -> dict[str, Any]:
        """The raw click in `value`; InvalidMessage when it cannot be decoded or lacks a field."""
        if value is None:
            raise _invalid(src, b"", "empty_value", "record has no value (tombstone on clicks.raw)")
        try:
            # Our own writer schema takes the hand-written path; anything else (or anything it
            # refuses) goes through the codec, which resolves old schemas and names the error.
            if not value.startswith(self._raw_header):
                raise Unsupported("not our writer schema")
            raw = decode_raw(value, len(self._raw_header))
        except Unsupported:
            try:
                raw = self.raw_codec.decode(value)
            except CodecError as exc:
                raise _invalid(src, value, type(exc).__name__, str(exc)) from exc
        missing = [f for f in REQUIRED if not raw.get(f)]
        if missing:
            raise _invalid(src, value, "missing_field", f"raw click has empty {', '.join(missing)}")
        return raw

    def enrich(
        self, raw: Mapping[str, Any], link: LinkInfo | None, *, now_ms: int, velocity: int,
        value: bytes, src: Source,
    ) -> dict[str, Any]:
        """The enriched_click record; InvalidMessage when the chain fails on this click."""
        try:
            return self.enricher.enrich(raw, link, now_ms=now_ms, velocity=velocity)
        except Exception as exc:  # one bad click must not stop the stream: it goes to dead letters
            raise _invalid(src, value, "enrich_error", f"{type(exc).__name__}: {exc}") from exc

    def encode(self, record: Mapping[str, Any], *, value: bytes, src: Source) -> Enriched:
        """The enriched click as Kafka key (link id) and Avro value; InvalidMessage if it does not fit."""
        try:
            payload = encode_enriched(self._enriched_header, record)
        except Unsupported:
            # Defaults, odd types and errors are fastavro's call, as everywhere else in clickwire.
            try:
                payload = self.enriched_codec.encode(record)
            except CodecError as exc:
                raise _invalid(src, value, type(exc).__name__, str(exc)) from exc
        link_id = str(record["link_id"])
        return Enriched(link_id.encode(), payload, link_id, bool(record["is_bot"]))

    def process(
        self, value: bytes | None, src: Source, link_for: Any, velocity_for: Any, *, now_ms: int
    ) -> Enriched:
        """decode -> link join -> velocity -> enrich -> encode for one record (raises InvalidMessage)."""
        raw = self.decode(value, src)
        assert value is not None  # decode raised otherwise
        record = self.enrich(raw, link_for(raw["link_id"]), now_ms=now_ms, velocity=velocity_for(raw),
                             value=value, src=src)
        return self.encode(record, value=value, src=src)

    def from_json(self, obj: Any, src: Source) -> dict[str, Any]:
        """A raw click given as JSON (e.g. a line of `clickwire enrich`), validated like a Kafka record."""
        if not isinstance(obj, dict):
            raise _invalid(src, b"", "not_an_object", f"expected a JSON object, got {type(obj).__name__}")
        try:
            value = self.raw_codec.encode(obj)
        except CodecError as exc:
            raise _invalid(src, b"", type(exc).__name__, str(exc)) from exc
        return self.decode(value, src)
