"""Which topic goes to which ClickHouse table, and how one Kafka record becomes one row.

Mapping is pure: `TableMapping.to_row` turns (key, value, timestamp) into a row, a `LinkTombstone`,
or raises `InvalidRecord` (undecodable or out of the table's range), which the writer sends to the
dead-letter topic. Rows carry the Avro field names, which are the column names (the migrations in
schemas/clickhouse say so), so a field added to a schema fails the insert instead of vanishing.

A tombstone on the compacted links topic carries only its key (domain/code), while the links table
is keyed by link id: `resolve_links` turns tombstones into a copy of the link's latest row with
`deleted = 1` and a newer `updated_ms`, so ReplacingMergeTree(updated_ms) keeps the deletion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from clickwire.clickhouse import ClickHouseStore
from clickwire.codec import CodecError, codec_for
from clickwire.topics import Topic

Row = dict[str, Any]

# DateTime64(3) holds 1900-01-01 .. 2299-12-31; outside it ClickHouse fails the whole batch.
_MIN_MS = -2_208_988_800_000
_MAX_MS = 10_413_791_999_999


class InvalidRecord(Exception):
    """A record that cannot become a row: `error_class` is machine-readable, str() the reason."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class


@dataclass(frozen=True)
class LinkTombstone:
    """A deletion on the links topic: only the key is known until resolved against the table."""

    domain: str
    code: str
    ts_ms: int


def _check_range(row: Mapping[str, Any], field: str, lo: int, hi: int) -> None:
    value = row.get(field)
    if value is not None and not lo <= value <= hi:
        raise InvalidRecord("out_of_range", f"{field}={value} is outside {lo}..{hi}")


def _check_time(row: Mapping[str, Any], *fields: str) -> None:
    for field in fields:
        _check_range(row, field, _MIN_MS, _MAX_MS)


def _click_row(record: Row) -> Row:
    if not record["click_id"]:
        raise InvalidRecord("missing_click_id", "click_id is empty")
    _check_range(record, "status", 0, 65535)
    _check_range(record, "asn", 0, 2**32 - 1)
    _check_range(record, "trust_score", 0, 100)
    _check_time(record, "ts_ms", "link_created_ms", "enriched_ms")
    return record


def _link_row(record: Row) -> Row:
    _check_range(record, "redirect_type", 0, 65535)
    _check_range(record, "destination_trust", 0, 255)
    _check_time(record, "created_ms", "updated_ms", "expires_ms")
    # The routing rules are a nested Avro array; the table keeps them as JSON text.
    return {**record, "rules": orjson.dumps(record.get("rules", [])).decode(), "deleted": 0}


def _attempt_row(record: Row) -> Row:
    _check_range(record, "attempt", 0, 65535)
    _check_range(record, "status", 0, 65535)
    _check_time(record, "ts_ms", "next_attempt_ms")
    return record


def _dead_letter_row(record: Row) -> Row:
    _check_time(record, "ts_ms")
    return record


@dataclass(frozen=True)
class TableMapping:
    """One topic written to one table."""

    topic: Topic
    table: str
    _convert: Callable[[Row], Row]
    tombstones: bool = False

    def to_row(self, key: bytes | None, value: bytes | None, timestamp_ms: int,
               registry_url: str | None = None) -> Row | LinkTombstone:
        """Decode and validate one record; raise InvalidRecord when it cannot be stored."""
        if value is None:
            if not self.tombstones:
                raise InvalidRecord("null_value", f"a record without a value on {self.topic.value}")
            return _tombstone(key, timestamp_ms)
        try:
            record = codec_for(self.topic, registry_url).decode(value)
        except CodecError as exc:
            raise InvalidRecord("undecodable", f"{type(exc).__name__}: {exc}") from exc
        return self._convert(record)


def _tombstone(key: bytes | None, timestamp_ms: int) -> LinkTombstone:
    text = (key or b"").decode("utf-8", errors="replace")
    domain, slash, code = text.partition("/")
    if not slash or not domain or not code:
        raise InvalidRecord("bad_tombstone_key", f"tombstone key {text!r} is not domain/code")
    return LinkTombstone(domain, code, timestamp_ms)


MAPPINGS: Mapping[Topic, TableMapping] = {
    m.topic: m
    for m in (
        TableMapping(Topic.CLICKS_ENRICHED, "clickwire.clicks", _click_row),
        TableMapping(Topic.LINKS, "clickwire.links", _link_row, tombstones=True),
        TableMapping(Topic.WEBHOOK_ATTEMPTS, "clickwire.webhook_attempts", _attempt_row),
        TableMapping(Topic.DEAD_LETTERS, "clickwire.dead_letters", _dead_letter_row),
    )
}

_LATEST_LINK_SQL = (
    "SELECT * FROM clickwire.links FINAL"
    " WHERE domain = {domain:String} AND code = {code:String} AND deleted = 0"
    " ORDER BY updated_ms DESC LIMIT 1"
)


def _ms(value: Any) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


async def resolve_links(store: ClickHouseStore, items: Sequence[Row | LinkTombstone]) -> list[Row]:
    """Rows for the links table, in order: tombstones become deleted copies of the link's latest row.

    A tombstone for a link the table never saw yields nothing: there is nothing to delete.
    """
    latest: dict[tuple[str, str], Row] = {}
    rows: list[Row] = []
    for item in items:
        if isinstance(item, LinkTombstone):
            key = (item.domain, item.code)
            found = latest.get(key)
            if found is None:
                result = await store.query(_LATEST_LINK_SQL, {"domain": item.domain, "code": item.code})
                found = result[0] if result else None
            if found is None or found.get("deleted"):
                continue
            # Newer than the version it deletes even if clocks disagree, so RMT(updated_ms) keeps it.
            updated = max(_ms(found["updated_ms"]) + 1, item.ts_ms)
            row = {**found, "updated_ms": updated, "deleted": 1}
        else:
            row = item
            key = (str(row["domain"]), str(row["code"]))
        latest[key] = row
        rows.append(row)
    return rows
