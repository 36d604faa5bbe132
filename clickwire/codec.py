"""Avro encoding of every Kafka record clickwire writes, one cached codec per logical topic.

Wire formats:

* Avro single-object encoding (default): ``C3 01`` + the writer schema's 8-byte little-endian
  CRC-64-AVRO fingerprint + the schemaless Avro body. Decoding finds the writer schema among every
  .avsc file and every schema given to `clickwire.schemas.register_writer_schema`, then resolves it
  to the codec's reader schema, so a reader holding a newer backward-compatible schema reads older
  records.
* Confluent wire format (when a `SchemaRegistry` is given): ``00`` + 4-byte big-endian schema id +
  the body. A codec with a registry still decodes single-object payloads, so topics can migrate.

Time logical types (timestamp-millis, ...) are written and read as plain ints: every ``*_ms`` field
in clickwire is an int of ms since the epoch, never a datetime.

Exceptions:

* CodecError
  + UnknownSchemaError - the payload's fingerprint or registry id names no known schema.
  + MalformedPayloadError - unknown marker, corrupt Avro bytes, or bytes after the record.
    - TruncatedPayloadError - the payload ends inside the marker, the fingerprint/id or the body.
      Corrupt bytes that declare a length past the end, or whose very last byte is corrupt,
      cannot be told apart from a cut payload and raise this too; catch MalformedPayloadError
      to handle both.
  + SchemaMismatchError - on encode, the record does not fit the writer schema (names the field);
    on decode, the writer schema cannot be resolved to the reader schema.
  + SchemaRegistryError - the schema registry could not be reached or refused a request.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import urllib.parse
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import httpx
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from clickwire.schemas import (
    ParsedSchema,
    SchemaJSON,
    fingerprint,
    schema_json,
    writer_schema_for,
)
from clickwire.topics import Topic, spec

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MARKER",
    "AvroCodec",
    "CodecError",
    "MalformedPayloadError",
    "SchemaMismatchError",
    "SchemaRegistry",
    "SchemaRegistryError",
    "TruncatedPayloadError",
    "UnknownSchemaError",
    "codec_for",
    "topic_schema_name",
]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER_LEN = len(SINGLE_OBJECT_MARKER) + 8
_CONFLUENT_HEADER_LEN = len(CONFLUENT_MAGIC) + 4

# fastavro would turn these into datetime/UUID objects on read; clickwire keeps them as ints/strings.
_PLAIN_LOGICAL_TYPES = frozenset(
    {
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "time-millis",
        "time-micros",
        "date",
        "uuid",
    }
)

# fastavro's writer names the failing field only inside its message.
_FIELD_IN_MESSAGE = re.compile(
    r"(?:on field|no default for|more fields than the schema specifies:|Field) (?P<field>[\w.]+)"
)


class CodecError(Exception):
    """Base class of every error raised while encoding or decoding a record."""


class UnknownSchemaError(CodecError):
    """The payload names a writer schema this process does not know."""

    def __init__(self, message: str, *, fingerprint: str | None = None, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.schema_id = schema_id


class MalformedPayloadError(CodecError):
    """The payload is not a framed Avro record (bad marker, corrupt body, trailing bytes)."""


class TruncatedPayloadError(MalformedPayloadError):
    """The payload ends before the header, fingerprint/id or body is complete."""


class SchemaMismatchError(CodecError):
    """A record does not fit the schema, or the writer schema cannot be resolved to the reader's."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SchemaRegistryError(CodecError):
    """The schema registry could not be reached or answered with an error."""


class SchemaRegistry:
    """A small synchronous Confluent Schema Registry client, caching ids and schemas for the process.

    Synchronous on purpose: registration happens once per codec at startup and fetches once per
    unseen schema id, so the event loop is blocked at most once per schema.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/vnd.schemaregistry.v1+json, application/json"},
        )
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, SchemaJSON] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: SchemaJSON | Mapping[str, Any]) -> int:
        """Register `schema` under `subject` (idempotent in the registry) and return its global id."""
        text = json.dumps(schema if isinstance(schema, str | list) else dict(schema), separators=(",", ":"))
        key = (subject, text)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
            path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
            body = self._request(
                "POST",
                path,
                content=json.dumps({"schema": text}).encode(),
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            )
            schema_id = body.get("id")
            if not isinstance(schema_id, int):
                raise SchemaRegistryError(f"registry answered POST {path} without an integer id")
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, json.loads(text))
            return schema_id

    def schema(self, schema_id: int) -> SchemaJSON:
        """Return the schema registered with `schema_id`; UnknownSchemaError when the registry has none."""
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
            body = self._request("GET", f"/schemas/ids/{schema_id}", missing_id=schema_id)
            text = body.get("schema")
            if not isinstance(text, str):
                raise SchemaRegistryError(f"registry answered GET /schemas/ids/{schema_id} without a schema")
            if body.get("schemaType", "AVRO") != "AVRO":
                raise UnknownSchemaError(
                    f"schema id {schema_id} is a {body['schemaType']} schema, not Avro", schema_id=schema_id
                )
            schema: SchemaJSON = json.loads(text)
            self._schemas[schema_id] = schema
            return schema

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        missing_id: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            # The URL may carry credentials: name the path only.
            raise SchemaRegistryError(
                f"schema registry {method} {path} failed: {type(exc).__name__}"
            ) from exc
        if response.status_code == 404 and missing_id is not None:
            raise UnknownSchemaError(f"schema registry has no schema id {missing_id}", schema_id=missing_id)
        if response.is_error:
            raise SchemaRegistryError(
                f"schema registry {method} {path} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise SchemaRegistryError(f"schema registry {method} {path} answered non-JSON") from exc
        if not isinstance(body, dict):
            raise SchemaRegistryError(f"schema registry {method} {path} answered {type(body).__name__}")
        return body


class AvroCodec:
    """Encodes records with one writer schema and decodes any known writer schema into one reader schema."""

    def __init__(
        self,
        writer_schema_name: str,
        *,
        reader_schema: Mapping[str, Any] | None = None,
        registry: SchemaRegistry | None = None,
        subject: str | None = None,
    ) -> None:
        writer_json = schema_json(writer_schema_name)
        self.writer_schema_name = writer_schema_name
        self.fingerprint = fingerprint(writer_json)
        self._writer = _parse_plain(writer_json)
        reader_json: SchemaJSON = writer_json if reader_schema is None else dict(reader_schema)
        self._reader = self._writer if reader_schema is None else _parse_plain(reader_json)
        self._reader_fingerprint = fingerprint(reader_json)
        self._registry = registry
        self.schema_id: int | None = None
        if registry is None:
            self._header = SINGLE_OBJECT_MARKER + self.fingerprint
        else:
            # Confluent's RecordNameStrategy when the caller names no subject (codec_for names the topic's).
            self.schema_id = registry.register(subject or _full_name(writer_json), writer_json)
            self._header = CONFLUENT_MAGIC + self.schema_id.to_bytes(4, "big")
        # Writer schemas seen on decode, by fingerprint or registry id; None means "same as reader".
        self._by_fingerprint: dict[bytes, ParsedSchema | None] = {self.fingerprint: self._writer}
        self._by_fingerprint[self._reader_fingerprint] = None
        self._by_id: dict[int, ParsedSchema | None] = {}

    @property
    def header(self) -> bytes:
        """Return the bytes every encoded payload starts with (marker + fingerprint, or magic + id)."""
        return self._header

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Return `record` framed and Avro-encoded; SchemaMismatchError names the field that does not fit."""
        buf = BytesIO()
        buf.write(self._header)
        try:
            # strict_allow_default: a misspelt key fails loudly instead of silently dropping its value.
            schemaless_writer(buf, self._writer, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            match = _FIELD_IN_MESSAGE.search(str(exc))
            field = match.group("field") if match else None
            raise SchemaMismatchError(
                f"record does not match schema {self.writer_schema_name}: {exc}", field=field
            ) from exc
        return buf.getvalue()

    def decode(self, payload: bytes) -> dict[str, Any]:
        """Return the record in `payload`, resolved to the reader schema; raises a CodecError otherwise."""
        if payload[:2] == SINGLE_OBJECT_MARKER:
            if len(payload) < _SINGLE_OBJECT_HEADER_LEN:
                raise TruncatedPayloadError(
                    f"payload of {len(payload)} bytes ends inside the single-object fingerprint"
                )
            writer = self._writer_for_fingerprint(payload[2:_SINGLE_OBJECT_HEADER_LEN])
            start = _SINGLE_OBJECT_HEADER_LEN
        elif payload[:1] == CONFLUENT_MAGIC:
            if len(payload) < _CONFLUENT_HEADER_LEN:
                raise TruncatedPayloadError(f"payload of {len(payload)} bytes ends inside the schema id")
            writer = self._writer_for_id(int.from_bytes(payload[1:_CONFLUENT_HEADER_LEN], "big"))
            start = _CONFLUENT_HEADER_LEN
        elif payload in (b"", SINGLE_OBJECT_MARKER[:1]):
            raise TruncatedPayloadError(f"payload of {len(payload)} bytes ends inside the marker")
        else:
            raise MalformedPayloadError(f"unknown payload marker {payload[:2].hex()}")
        fo = BytesIO(payload)
        fo.seek(start)
        try:
            if writer is None:
                record = schemaless_reader(fo, self._reader, None)
            else:
                record = schemaless_reader(fo, writer, self._reader)
        except EOFError as exc:
            raise TruncatedPayloadError(f"Avro body ends early: {exc}") from exc
        except SchemaResolutionError as exc:
            raise SchemaMismatchError(f"writer schema cannot be read as the reader schema: {exc}") from exc
        except (ValueError, IndexError, TypeError, OverflowError, MemoryError) as exc:
            # fastavro reports a varint read at the end of the buffer as IndexError, like a union
            # branch that does not exist: only the position tells a cut body from a corrupt one.
            if fo.tell() >= len(payload):
                raise TruncatedPayloadError(f"Avro body ends early: {type(exc).__name__}: {exc}") from exc
            raise MalformedPayloadError(f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        if fo.tell() != len(payload):
            raise MalformedPayloadError(f"{len(payload) - fo.tell()} bytes follow the Avro record")
        if not isinstance(record, dict):
            raise MalformedPayloadError(f"payload holds a {type(record).__name__}, not a record")
        return record

    def _writer_for_fingerprint(self, fp: bytes) -> ParsedSchema | None:
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            pass
        found = writer_schema_for(fp)
        if found is None:
            raise UnknownSchemaError(
                f"no known writer schema has fingerprint {fp.hex()}", fingerprint=fp.hex()
            )
        parsed = _parse_plain(found)
        self._by_fingerprint[fp] = parsed
        return parsed

    def _writer_for_id(self, schema_id: int) -> ParsedSchema | None:
        try:
            return self._by_id[schema_id]
        except KeyError:
            pass
        if schema_id == self.schema_id and self._reader is self._writer:
            parsed: ParsedSchema | None = None
        elif self._registry is None:
            raise UnknownSchemaError(
                f"payload names registry schema id {schema_id} but no schema registry is configured",
                schema_id=schema_id,
            )
        else:
            found = self._registry.schema(schema_id)
            parsed = None if fingerprint(found) == self._reader_fingerprint else _parse_plain(found)
        self._by_id[schema_id] = parsed
        return parsed


def topic_schema_name(topic: Topic | str) -> str:
    """Return the schema name deploy/topics.toml declares for a logical topic (ValueError if unknown)."""
    return spec(Topic(topic)).schema


def codec_for(topic: Topic | str, registry_url: str | None = None) -> AvroCodec:
    """Return the one codec per logical topic and registry URL (Confluent framing when a URL is given)."""
    # Normalised first: functools.cache keys Topic.X and "x" apart although they are equal.
    return _cached_codec(Topic(topic).value, registry_url)


@functools.cache
def _cached_codec(topic: str, registry_url: str | None) -> AvroCodec:
    declared = spec(Topic(topic))
    if registry_url is None:
        return AvroCodec(declared.schema)
    # TopicNameStrategy, as Confluent's serializers default to; the declared name, without test prefixes.
    return AvroCodec(declared.schema, registry=_registry_for(registry_url), subject=f"{declared.name}-value")


@functools.cache
def _registry_for(url: str) -> SchemaRegistry:
    return SchemaRegistry(url)


def _parse_plain(schema: SchemaJSON) -> ParsedSchema:
    parsed: ParsedSchema = parse_schema(_without_logical_types(schema))
    return parsed


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: _without_logical_types(value)
            for key, value in schema.items()
            if not (key == "logicalType" and value in _PLAIN_LOGICAL_TYPES)
        }
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    return schema


def _full_name(schema: SchemaJSON) -> str:
    if isinstance(schema, dict) and "name" in schema:
        name = str(schema["name"])
        namespace = schema.get("namespace")
        return f"{namespace}.{name}" if namespace and "." not in name else name
    raise ValueError("a registry subject is required for a schema that is not a named type")
