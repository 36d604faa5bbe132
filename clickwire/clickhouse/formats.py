"""Wire formats both stores share: how rows are encoded for INSERT and how results are decoded.

Inserts are JSONCompactEachRow with a column list (or JSONEachRow when rows differ in fields),
encoded by orjson; results are JSONCompactEachRowWithNamesAndTypes. Both engines get the same
settings, so the embedded engine and a server see identical bytes.
"""

from __future__ import annotations

import base64
import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson

INSERT_FORMAT = "JSONEachRow"
COMPACT_INSERT_FORMAT = "JSONCompactEachRow"
RESULT_FORMAT = "JSONCompactEachRowWithNamesAndTypes"

# Applied to every query and insert on both engines so results look the same everywhere:
# numbers stay numbers, naive DateTime values are UTC, and invalid UTF-8 cannot break orjson.
SESSION_SETTINGS: Mapping[str, str | int] = {
    "session_timezone": "UTC",
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_64bit_floats": 0,
    "output_format_json_quote_decimals": 0,
    "output_format_json_validate_utf8": 1,
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_TZ_IN_TYPE = re.compile(r"'([^']+)'")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

Row = dict[str, Any]


def check_table_name(table: str) -> str:
    """Return table unchanged when it is `name` or `database.name`, else raise ValueError."""
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"not a plain table name: {table!r}")
    return table


def split_table_name(table: str) -> tuple[str, str]:
    """Split `db.table` into (db, table); db is '' (current database) for a bare name."""
    database, _, name = check_table_name(table).rpartition(".")
    return database, name


def sql_string(value: str) -> str:
    """Quote value as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def insert_settings(dedup_token: str | None) -> dict[str, str | int]:
    """Settings for one INSERT: strict field names, unambiguous timestamps, optional dedup token."""
    settings: dict[str, str | int] = {
        # A field the table lacks is a contract bug: fail the batch instead of dropping data silently.
        "input_format_skip_unknown_fields": 0,
        # Timestamps are sent as 'seconds.millis' text, which 'basic' parses the same on every server.
        "date_time_input_format": "basic",
    }
    if dedup_token is not None:
        settings["insert_deduplicate"] = 1
        settings["insert_deduplication_token"] = dedup_token
    return settings


def insert_statement(table: str, columns: Sequence[str] | None, settings: Mapping[str, str | int]) -> str:
    """The INSERT statement (without FORMAT) that carries settings inline, for engines that need it."""
    column_list = f" ({', '.join(map(quote_identifier, columns))})" if columns else ""
    clauses = ", ".join(
        f"{name} = {sql_string(value) if isinstance(value, str) else value}"
        for name, value in settings.items()
    )
    return f"INSERT INTO {check_table_name(table)}{column_list} SETTINGS {clauses}"


def _millis_text(millis: int) -> str:
    sign = "-" if millis < 0 else ""
    seconds, rest = divmod(abs(millis), 1000)
    return f"{sign}{seconds}.{rest:03d}"


def _timestamp_text(value: Any) -> Any:
    # bool is an int subclass; leave it for the engine to reject rather than read it as 1 ms.
    if isinstance(value, int) and not isinstance(value, bool):
        return _millis_text(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _millis_text((aware - _EPOCH) // _ONE_MS)
    return value


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot store {type(value).__name__} in ClickHouse")


@dataclass(frozen=True)
class InsertBody:
    """An encoded batch: its format, the columns it fills (None: named in every row) and the bytes."""

    format: str
    columns: tuple[str, ...] | None
    data: bytes


class _KeysDiffer(Exception):
    """Rows do not all carry the same fields, so they cannot share one column list."""


def _encode_compact(rows: Sequence[Mapping[str, Any]], timestamp_columns: Collection[str]) -> InsertBody:
    columns = tuple(rows[0].keys())
    width = len(columns)
    get = operator.itemgetter(*columns)
    stamped = [index for index, name in enumerate(columns) if name in timestamp_columns]
    dumps = orjson.dumps
    lines: list[bytes] = []
    append = lines.append
    for row in rows:
        if len(row) != width:
            raise _KeysDiffer
        try:
            values = get(row)
        except KeyError:
            raise _KeysDiffer from None
        if width == 1:
            values = (values,)
        if stamped:
            values = list(values)
            for index in stamped:
                values[index] = _timestamp_text(values[index])
        append(dumps(values, default=_default))
    lines.append(b"")
    return InsertBody(COMPACT_INSERT_FORMAT, columns, b"\n".join(lines))


def _encode_named(rows: Sequence[Mapping[str, Any]], timestamp_columns: Collection[str]) -> InsertBody:
    lines: list[bytes] = []
    for row in rows:
        converted = {
            name: _timestamp_text(value) if name in timestamp_columns else value
            for name, value in row.items()
        }
        lines.append(orjson.dumps(converted, default=_default))
    lines.append(b"")
    return InsertBody(INSERT_FORMAT, None, b"\n".join(lines))


def encode_rows(rows: Sequence[Mapping[str, Any]], timestamp_columns: Collection[str]) -> InsertBody:
    """Encode rows for INSERT; ints and datetimes in timestamp_columns become epoch-ms timestamps.

    Rows sharing one set of fields (the usual batch) go as JSONCompactEachRow with a column list,
    which is less than half the bytes of JSONEachRow and parses faster; mixed rows as JSONEachRow.
    """
    if not rows:
        raise ValueError("no rows to encode")
    try:
        return _encode_compact(rows, timestamp_columns)
    except _KeysDiffer:
        return _encode_named(rows, timestamp_columns)


def quote_identifier(name: str) -> str:
    """Quote a column name for ClickHouse SQL."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _strip_wrappers(type_name: str) -> str:
    for wrapper in ("LowCardinality(", "Nullable("):
        while type_name.startswith(wrapper):
            type_name = type_name[len(wrapper) : -1]
    return type_name


@cache
def _converter(type_name: str) -> Callable[[Any], Any] | None:
    base = _strip_wrappers(type_name)
    if base.startswith(("DateTime64", "DateTime")):
        match = _TZ_IN_TYPE.search(base)
        tz = ZoneInfo(match.group(1)) if match else UTC

        def to_datetime(text: Any) -> Any:
            return None if text is None else datetime.fromisoformat(text).replace(tzinfo=tz)

        return to_datetime
    if base in ("Date", "Date32"):
        return lambda text: None if text is None else date.fromisoformat(text)
    return None


def decode_rows(body: bytes) -> list[Row]:
    """Decode a JSONCompactEachRowWithNamesAndTypes body into dicts with datetimes parsed."""
    lines = body.split(b"\n")
    if len(lines) < 2 or not lines[0]:
        return []
    names: list[str] = orjson.loads(lines[0])
    converters = [_converter(type_name) for type_name in orjson.loads(lines[1])]
    plain = all(convert is None for convert in converters)
    rows: list[Row] = []
    for line in lines[2:]:
        if not line:
            continue
        values = orjson.loads(line)
        if not plain:
            values = [
                v if convert is None else convert(v) for v, convert in zip(values, converters, strict=True)
            ]
        rows.append(dict(zip(names, values, strict=True)))
    return rows


def timestamp_columns(columns: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Names of the DateTime64 columns among system.columns rows (name, type)."""
    return frozenset(
        str(column["name"])
        for column in columns
        if _strip_wrappers(str(column["type"])).startswith("DateTime64")
    )
