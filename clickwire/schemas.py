"""The Avro contracts in schemas/avro/*.avsc: loading, canonical forms and fingerprints.

Fingerprints follow the Avro spec ("Schema Fingerprints"): CRC-64-AVRO (Rabin) over the schema's
Parsing Canonical Form, as the 8 little-endian bytes the single-object encoding puts on the wire.
Besides the .avsc files, older writer schemas can be registered at runtime with
`register_writer_schema` so records written before a schema change still decode.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

__all__ = [
    "SCHEMA_DIR_ENV",
    "ParsedSchema",
    "SchemaJSON",
    "canonical_form",
    "fingerprint",
    "known_fingerprints",
    "load_schema",
    "register_writer_schema",
    "schema_dir",
    "schema_json",
    "schema_names",
    "writer_schema_for",
]

SCHEMA_DIR_ENV = "CLICKWIRE_SCHEMA_DIR"

# A schema as JSON (a primitive name, a union list or an object) and as fastavro parsed it.
SchemaJSON: TypeAlias = str | list[Any] | dict[str, Any]
ParsedSchema: TypeAlias = str | list[Any] | dict[str, Any]

_registered: dict[bytes, SchemaJSON] = {}
_registered_lock = threading.Lock()


def schema_dir() -> Path:
    """Return the directory holding the .avsc files ($CLICKWIRE_SCHEMA_DIR wins over the checkout)."""
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "schemas" / "avro"


def schema_names() -> list[str]:
    """Return the names (file stems) of every .avsc file in `schema_dir()`, sorted."""
    return sorted(path.stem for path in schema_dir().glob("*.avsc"))


def schema_json(name: str) -> SchemaJSON:
    """Return the JSON of schema `name` as written in its .avsc file (shared: do not mutate)."""
    return _read_json(schema_dir(), name)


def load_schema(name: str) -> ParsedSchema:
    """Return schema `name` parsed by fastavro (cached; raises FileNotFoundError naming the file)."""
    return _parse_file(schema_dir(), name)


def canonical_form(schema: SchemaJSON | Mapping[str, Any]) -> str:
    """Return the Avro Parsing Canonical Form of a schema given as JSON."""
    return to_parsing_canonical_form(_plain(schema))


def fingerprint(schema: SchemaJSON | Mapping[str, Any]) -> bytes:
    """Return the CRC-64-AVRO fingerprint of a schema as the 8 little-endian bytes used on the wire."""
    return bytes.fromhex(_fastavro_fingerprint(canonical_form(schema), "CRC-64-AVRO"))


def register_writer_schema(schema: SchemaJSON | Mapping[str, Any]) -> bytes:
    """Make `schema` (e.g. an older version) decodable by fingerprint here; return its fingerprint."""
    plain = _plain(schema)
    parse_schema(plain)  # reject an invalid schema here, not at the first record that needs it
    fp = fingerprint(plain)
    with _registered_lock:
        _registered[fp] = plain
    return fp


def writer_schema_for(fp: bytes) -> SchemaJSON | None:
    """Return the JSON of the writer schema with fingerprint `fp` (.avsc files, then registered), or None."""
    found = _fingerprints_in(schema_dir()).get(fp)
    if found is not None:
        return found
    return _registered.get(fp)


def known_fingerprints() -> dict[bytes, str]:
    """Return every known fingerprint mapped to the schema's full name (or the .avsc name for non-records)."""
    known = {fp: _display_name(schema) for fp, schema in _registered.items()}
    known.update({fp: _display_name(schema) for fp, schema in _fingerprints_in(schema_dir()).items()})
    return known


@functools.cache
def _read_json(directory: Path, name: str) -> SchemaJSON:
    path = directory / f"{name}.avsc"
    with path.open("rb") as f:
        loaded: SchemaJSON = json.load(f)
    return loaded


@functools.cache
def _parse_file(directory: Path, name: str) -> ParsedSchema:
    parsed: ParsedSchema = parse_schema(_read_json(directory, name))
    return parsed


@functools.cache
def _fingerprints_in(directory: Path) -> dict[bytes, SchemaJSON]:
    # Cached per directory: the .avsc files only change with a deploy, and decode looks up on every record.
    schemas = (_read_json(directory, path.stem) for path in directory.glob("*.avsc"))
    return {fingerprint(schema): schema for schema in schemas}


def _plain(schema: SchemaJSON | Mapping[str, Any]) -> SchemaJSON:
    # Round-trip through JSON so callers' Mappings (and fastavro's parse markers) never leak in.
    if isinstance(schema, str):
        return schema
    plain: SchemaJSON = json.loads(json.dumps(schema if isinstance(schema, list) else dict(schema)))
    return plain


def _display_name(schema: SchemaJSON) -> str:
    if isinstance(schema, dict):
        name = schema.get("name", schema.get("type", "?"))
        namespace = schema.get("namespace")
        return f"{namespace}.{name}" if namespace and "." not in str(name) else str(name)
    return json.dumps(schema)
