"""ClickHouseStore on the real engine (chdb), plus request shaping of ServerStore without a server."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clickwire.clickhouse import (
    ClickHouseUnavailable,
    MigrationError,
    QueryError,
    ReadOnlyViolation,
    apply_migrations,
    open_store,
    pending_migrations,
)
from clickwire.clickhouse.embedded import EmbeddedStore
from clickwire.clickhouse.formats import RESULT_FORMAT, encode_rows, insert_settings, insert_statement
from clickwire.clickhouse.migrations import load_migrations
from clickwire.clickhouse.readonly import ensure_readonly
from clickwire.clickhouse.server import ServerStore, parse_server_url

TS_MS = 1_700_000_000_123


def enriched_click(
    workspace_id: str, n: int, *, is_bot: bool = False, visitor: str | None = None
) -> dict[str, Any]:
    """An enriched click row with every field of enriched_click.avsc set."""
    return {
        "click_id": str(uuid.uuid4()),
        "ts_ms": TS_MS + n,
        "link_id": "lnk_1",
        "workspace_id": workspace_id,
        "domain": "cw.link",
        "code": "abc",
        "method": "GET",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "referer": "https://news.example/",
        "accept_language": "de-DE",
        "purpose": None,
        "ch_ua": None,
        "ch_ua_mobile": "?0",
        "ch_ua_platform": None,
        "query": "utm_source=mail",
        "qr": False,
        "status": 302,
        "destination": "https://example.com/landing",
        "redirector_id": "redir-1",
        "ip": "203.0.113.0",
        "tags": ["spring", "de"],
        "campaign": "spring",
        "utm_source": "mail",
        "utm_medium": None,
        "utm_campaign": None,
        "utm_term": None,
        "utm_content": None,
        "link_created_ms": 1_690_000_000_000,
        "country": "DE",
        "region": "BE",
        "city": "Berlin",
        "latitude": 52.52,
        "longitude": 13.405,
        "asn": 3320,
        "as_org": "Deutsche Telekom AG",
        "browser": "Chrome",
        "browser_version": "120.0",
        "os": "Linux",
        "os_version": "",
        "device_family": "Other",
        "device_type": "desktop",
        "referrer_host": "news.example",
        "referrer_class": "other",
        "is_bot": is_bot,
        "bot_kind": "crawler" if is_bot else "none",
        "bot_name": "Googlebot" if is_bot else "",
        "trust_score": 10 if is_bot else 100,
        "trust_signals": ["ua_list"] if is_bot else [],
        "visitor_hash": visitor if visitor is not None else f"v{n}",
        "enriched_ms": TS_MS + n + 40,
    }


def new_workspace() -> str:
    """A workspace id no other test uses, so tests sharing the engine never see each other's rows."""
    return f"ws_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(clickhouse: EmbeddedStore) -> EmbeddedStore:
    """The session's embedded engine: chdb holds one data directory per process."""
    assert isinstance(clickhouse, EmbeddedStore)
    return clickhouse


def write_migrations(directory: Path, files: Mapping[str, str]) -> Path:
    """Write migration files into directory and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


# --- embedded engine -------------------------------------------------------------------------------


@pytest.mark.clickhouse
async def test_project_migrations_are_recorded_and_rerun_applies_nothing(store: EmbeddedStore) -> None:
    """Every project migration is recorded with its checksum, and applying again changes nothing."""
    recorded = await store.query(
        "SELECT version, name, checksum FROM clickwire.schema_migrations FINAL ORDER BY version"
    )
    expected = [(m.version, m.name, m.checksum) for m in load_migrations()]
    assert [(r["version"], r["name"], r["checksum"]) for r in recorded] == expected
    assert await apply_migrations(store) == []
    assert await pending_migrations(store) == []


@pytest.mark.clickhouse
async def test_migrations_apply_in_order_once(store: EmbeddedStore, tmp_path: Path) -> None:
    """Pending migrations run in version order and each runs once, new ones only on the next run."""
    ledger = f"mig_{uuid.uuid4().hex[:8]}"
    directory = write_migrations(
        tmp_path,
        {
            "0002_table.sql": f"CREATE TABLE IF NOT EXISTS {ledger}.t (a UInt8)\nENGINE = Memory;\n",
            "0001_db.sql": f"-- a comment line;\nCREATE DATABASE IF NOT EXISTS {ledger};\n",
        },
    )
    assert await pending_migrations(store, directory, database=ledger) == ["0001_db", "0002_table"]
    assert await apply_migrations(store, directory, database=ledger) == ["0001_db", "0002_table"]
    write_migrations(directory, {"0003_row.sql": f"INSERT INTO {ledger}.t VALUES (7);\n"})  # noqa: S608
    assert await apply_migrations(store, directory, database=ledger) == ["0003_row"]
    assert await apply_migrations(store, directory, database=ledger) == []
    assert await store.query(f"SELECT a FROM {ledger}.t") == [{"a": 7}]  # noqa: S608


@pytest.mark.clickhouse
async def test_edited_applied_migration_is_refused(store: EmbeddedStore, tmp_path: Path) -> None:
    """Changing an applied migration's file raises MigrationError naming it instead of applying anything."""
    ledger = f"mig_{uuid.uuid4().hex[:8]}"
    directory = write_migrations(tmp_path, {"0001_db.sql": f"CREATE DATABASE IF NOT EXISTS {ledger};\n"})
    await apply_migrations(store, directory, database=ledger)
    write_migrations(directory, {"0001_db.sql": f"CREATE DATABASE IF NOT EXISTS {ledger}; -- edited\n"})
    with pytest.raises(MigrationError, match=r"0001_db.*must not be edited"):
        await apply_migrations(store, directory, database=ledger)


@pytest.mark.clickhouse
async def test_enriched_click_round_trips(store: EmbeddedStore) -> None:
    """An enriched click comes back with every field equal, timestamps as UTC datetimes."""
    row = enriched_click(new_workspace(), 0)
    await store.insert("clickwire.clicks", [row], dedup_token=row["click_id"])
    [back] = await store.query(
        "SELECT * FROM clickwire.clicks WHERE click_id = {id:String}", {"id": row["click_id"]}
    )
    stamps = {"ts_ms", "link_created_ms", "enriched_ms"}
    assert {k: v for k, v in back.items() if k not in stamps} == {
        k: v for k, v in row.items() if k not in stamps
    }
    for name in stamps:
        assert back[name] == datetime.fromtimestamp(row[name] / 1000, UTC), name


@pytest.mark.clickhouse
async def test_same_dedup_token_inserts_one_copy(store: EmbeddedStore) -> None:
    """A batch retried with the same dedup token is stored once."""
    workspace = new_workspace()
    batch = [enriched_click(workspace, n) for n in range(50)]
    await store.insert("clickwire.clicks", batch, dedup_token=f"{workspace}:0-50")
    await store.insert("clickwire.clicks", batch, dedup_token=f"{workspace}:0-50")
    rows = await store.query(
        "SELECT count() AS n FROM clickwire.clicks WHERE workspace_id = {w:String}", {"w": workspace}
    )
    assert rows == [{"n": 50}]


@pytest.mark.clickhouse
async def test_different_tokens_duplicate_but_exact_counts_do_not(store: EmbeddedStore) -> None:
    """The same clicks under two tokens are stored twice, yet FINAL and uniqExact(click_id) count once."""
    workspace = new_workspace()
    batch = [enriched_click(workspace, n) for n in range(50)]
    # Merges would collapse the copies at a random moment; stop them so the raw count is deterministic.
    await store.command("SYSTEM STOP MERGES clickwire.clicks")
    try:
        await store.insert("clickwire.clicks", batch, dedup_token=f"{workspace}:a")
        await store.insert("clickwire.clicks", batch, dedup_token=f"{workspace}:b")
        [counts] = await store.query(
            "SELECT count() AS raw, uniqExact(click_id) AS exact,"
            " (SELECT count() FROM clickwire.clicks FINAL WHERE workspace_id = {w:String}) AS final"
            " FROM clickwire.clicks WHERE workspace_id = {w:String}",
            {"w": workspace},
        )
    finally:
        await store.command("SYSTEM START MERGES clickwire.clicks")
    assert counts == {"raw": 100, "exact": 50, "final": 50}


@pytest.mark.clickhouse
async def test_rollups_count_exactly_despite_duplicate_inserts(store: EmbeddedStore) -> None:
    """Both rollup views count distinct clicks, visitors and human clicks even when a batch lands twice."""
    workspace = new_workspace()
    humans = [enriched_click(workspace, n, visitor=f"v{n % 4}") for n in range(30)]
    bots = [enriched_click(workspace, 100 + n, is_bot=True, visitor="bot") for n in range(5)]
    batch = humans + bots
    await store.insert("clickwire.clicks", batch, dedup_token=f"{workspace}:first")
    await store.insert("clickwire.clicks", batch, dedup_token=f"{workspace}:retry-with-new-token")
    per_minute = await store.query(
        "SELECT is_bot, uniqExactMerge(clicks) AS clicks, uniqMerge(visitors) AS visitors"
        " FROM clickwire.clicks_per_minute WHERE workspace_id = {w:String} GROUP BY is_bot ORDER BY is_bot",
        {"w": workspace},
    )
    assert per_minute == [
        {"is_bot": False, "clicks": 30, "visitors": 4},
        {"is_bot": True, "clicks": 5, "visitors": 1},
    ]
    hourly = await store.query(
        "SELECT campaign, uniqExactMerge(clicks) AS clicks, uniqMerge(visitors) AS visitors,"
        " uniqExactMerge(human_clicks) AS humans"
        " FROM clickwire.campaign_hourly WHERE workspace_id = {w:String} GROUP BY campaign",
        {"w": workspace},
    )
    assert hourly == [{"campaign": "spring", "clicks": 35, "visitors": 5, "humans": 30}]


@pytest.mark.clickhouse
async def test_dead_letter_bytes_are_stored_base64(store: EmbeddedStore) -> None:
    """Avro bytes (not valid UTF-8) survive as base64 text, and datetimes are accepted as timestamps."""
    service = f"svc_{uuid.uuid4().hex[:8]}"
    value = b"\x00\xff\xfeAvro"
    letter = {
        "source_topic": "clicks.raw",
        "partition": 3,
        "offset": 42,
        "key": None,
        "value": value,
        "reason": "bad magic byte",
        "error_class": "decode",
        "service": service,
        "ts_ms": datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC),
    }
    await store.insert("clickwire.dead_letters", [letter])
    [back] = await store.query(
        "SELECT key, value, ts_ms FROM clickwire.dead_letters WHERE service = {s:String}", {"s": service}
    )
    assert back == {"key": None, "value": base64.b64encode(value).decode(), "ts_ms": letter["ts_ms"]}


@pytest.mark.clickhouse
async def test_rows_with_different_fields_insert_with_defaults(store: EmbeddedStore) -> None:
    """A batch whose rows carry different fields is accepted, omitted columns taking their defaults."""
    link = {
        "id": f"lnk_{uuid.uuid4().hex[:8]}",
        "workspace_id": "w",
        "domain": "cw.link",
        "code": "x",
        "destination": "https://example.com",
        "redirect_type": 302,
        "created_ms": TS_MS,
        "updated_ms": TS_MS,
        "tags": [],
        "bot_policy": "redirect",
        "destination_trust": 100,
        "destination_flags": [],
        "blocked": False,
    }
    tombstone = {**link, "updated_ms": TS_MS + 1, "deleted": 1}
    await store.insert("clickwire.links", [link, tombstone])
    rows = await store.query(
        "SELECT deleted, rules, expires_ms FROM clickwire.links FINAL WHERE id = {id:String}",
        {"id": link["id"]},
    )
    assert rows == [{"deleted": 1, "rules": "[]", "expires_ms": None}]


@pytest.mark.clickhouse
async def test_unknown_field_fails_the_batch(store: EmbeddedStore) -> None:
    """A row with a field the table lacks fails loudly instead of losing the field."""
    row = {**enriched_click(new_workspace(), 0), "not_a_column": 1}
    with pytest.raises(QueryError, match="not_a_column"):
        await store.insert("clickwire.clicks", [row])
    assert await store.ping() is True


@pytest.mark.clickhouse
async def test_bad_sql_raises_query_error_with_engine_message(store: EmbeddedStore) -> None:
    """A syntax error surfaces as QueryError carrying the engine's message and error code."""
    with pytest.raises(QueryError) as caught:
        await store.query("SELEC 1")
    assert caught.value.code == 62
    assert "Syntax error" in str(caught.value)


@pytest.mark.clickhouse
async def test_null_query_parameter_binds_null(store: EmbeddedStore) -> None:
    """A None parameter binds SQL NULL on the embedded engine, as it does through clickhouse-connect."""
    rows = await store.query("SELECT isNull({v:Nullable(String)}) AS is_null", {"v": None})
    assert rows == [{"is_null": 1}]


@pytest.mark.clickhouse
@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO clickwire.clicks (click_id) VALUES ('x')",
        "DROP TABLE clickwire.clicks",
        "ALTER TABLE clickwire.clicks DELETE WHERE 1",
        "SELECT 1; DROP TABLE clickwire.clicks",
        "/* SELECT */ TRUNCATE TABLE clickwire.clicks",
    ],
)
async def test_query_readonly_refuses_writes(store: EmbeddedStore, sql: str) -> None:
    """Analyst SQL that is not a single read is refused and the table is left untouched."""
    before = await store.query("SELECT count() AS n FROM clickwire.clicks")
    with pytest.raises(ReadOnlyViolation):
        await store.query_readonly(sql)
    assert await store.query("SELECT count() AS n FROM clickwire.clicks") == before


@pytest.mark.clickhouse
async def test_query_readonly_runs_reads_with_engine_readonly(store: EmbeddedStore) -> None:
    """Reads run (semicolons inside literals included), on a session the engine itself keeps read-only."""
    rows = await store.query_readonly("SELECT 'a;b' AS s, getSetting('readonly') AS ro;")
    assert rows == [{"s": "a;b", "ro": 1}]
    with pytest.raises(QueryError) as caught:
        await store.query_readonly("SELECT * FROM file('/etc/hostname', 'LineAsString')")
    assert caught.value.code == 164  # READONLY


@pytest.mark.clickhouse
async def test_closed_store_is_unavailable(store: EmbeddedStore) -> None:
    """After close() a store pings False and raises ClickHouseUnavailable; other stores keep working."""
    second = await open_store(None, store.data_dir)
    await second.close()
    assert await second.ping() is False
    with pytest.raises(ClickHouseUnavailable):
        await second.query("SELECT 1")
    assert await store.ping() is True


@pytest.mark.clickhouse
async def test_second_data_directory_in_one_process_is_unavailable(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    """Opening another data directory while one is open fails with ClickHouseUnavailable, not a crash."""
    with pytest.raises(ClickHouseUnavailable, match="only one"):
        await open_store(None, tmp_path / "other")


# --- ServerStore without a server ------------------------------------------------------------------


def test_server_url_parts_are_parsed() -> None:
    """A full URL yields host, port, credentials (percent-decoded) and database."""
    address = parse_server_url("https://ana%40x:p%3Ass@ch.example:9443/analytics")
    assert (
        address.host,
        address.port,
        address.username,
        address.password,
        address.database,
        address.secure,
    ) == (
        "ch.example",
        9443,
        "ana@x",
        "p:ss",
        "analytics",
        True,
    )


def test_server_url_defaults() -> None:
    """A bare URL gets ClickHouse's defaults: port 8123, user and database `default`, no password."""
    address = parse_server_url("http://localhost")
    assert (address.port, address.username, address.password, address.database, address.secure) == (
        8123,
        "default",
        "",
        "default",
        False,
    )


def test_server_address_never_shows_password() -> None:
    """The password appears neither in str() nor repr() of a parsed address."""
    address = parse_server_url("http://u:hunter2@h:8123/db")
    assert "hunter2" not in str(address)
    assert "hunter2" not in repr(address)


@pytest.mark.parametrize("url", ["clickhouse://h:9000/db", "http:///db", "http://h:8123/a/b"])
def test_bad_server_urls_are_refused(url: str) -> None:
    """URLs with another scheme, no host or a nested path are refused."""
    with pytest.raises(ValueError, match="ClickHouse URL"):
        parse_server_url(url)


class RecordingClient:
    """Stands in for clickhouse-connect's AsyncClient to record what ServerStore sends."""

    def __init__(self) -> None:
        self.inserts: list[dict[str, Any]] = []
        self.queries: list[dict[str, Any]] = []

    async def raw_insert(self, table: str, **kwargs: Any) -> None:
        self.inserts.append({"table": table, **kwargs})

    async def raw_query(self, query: str, **kwargs: Any) -> bytes:
        self.queries.append({"query": query, **kwargs})
        return b'["name","type"]\n["String","String"]\n["ts_ms","DateTime64(3, \'UTC\')"]\n'


async def test_server_store_sends_the_embedded_insert() -> None:
    """ServerStore sends the same columns, body, format and settings that EmbeddedStore inlines."""
    client = RecordingClient()
    server = ServerStore(client, parse_server_url("http://h:8123/db"))
    rows = [{"click_id": "c1", "ts_ms": TS_MS}]
    await server.insert("clickwire.clicks", rows, dedup_token="tok'1")
    [sent] = client.inserts
    body = encode_rows(rows, {"ts_ms"})
    assert sent == {
        "table": "clickwire.clicks",
        "column_names": ("click_id", "ts_ms"),
        "insert_block": body.data,
        "settings": insert_settings("tok'1"),
        "fmt": "JSONCompactEachRow",
    }
    assert body.data == b'["c1","1700000000.123"]\n'
    assert insert_statement("clickwire.clicks", body.columns, insert_settings("tok'1")) == (
        "INSERT INTO clickwire.clicks (`click_id`, `ts_ms`) SETTINGS input_format_skip_unknown_fields = 0,"
        " date_time_input_format = 'basic', insert_deduplicate = 1, insert_deduplication_token = 'tok\\'1'"
    )


async def test_server_store_query_readonly_sets_readonly() -> None:
    """query_readonly asks the server for readonly=1 and the shared result format; query does not."""
    client = RecordingClient()
    server = ServerStore(client, parse_server_url("http://h:8123/db"))
    await server.query("SELECT 1")
    await server.query_readonly("SELECT 2")
    plain, readonly = client.queries
    assert (plain["fmt"], readonly["fmt"]) == (RESULT_FORMAT, RESULT_FORMAT)
    assert "readonly" not in plain["settings"]
    assert readonly["settings"]["readonly"] == 1
    with pytest.raises(ReadOnlyViolation):
        await server.query_readonly("DROP TABLE x")
    assert len(client.queries) == 2


# --- pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "select 1",
        "  -- why\nWITH 1 AS x SELECT x",
        "SHOW TABLES FROM clickwire",
        "DESCRIBE TABLE clickwire.clicks",
        "EXPLAIN SELECT 1",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SELECT ua FROM t WHERE ua LIKE '%; DROP TABLE t%' /* ; */",
    ],
)
def test_reads_pass_the_readonly_guard(sql: str) -> None:
    """Single reads pass, however they start and whatever their literals and comments hold."""
    ensure_readonly(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "",
        "OPTIMIZE TABLE clickwire.clicks FINAL",
        "SET readonly = 0",
        "SELECT 1 INTO OUTFILE '/tmp/x.csv'",
        "SELECT 'a'; SELECT 'b'",
        "-- SELECT\nDELETE FROM t WHERE 1",
    ],
)
def test_other_statements_fail_the_readonly_guard(sql: str) -> None:
    """Anything but one read, including file writes and a write hidden behind a comment, is refused."""
    with pytest.raises(ReadOnlyViolation):
        ensure_readonly(sql)


def test_timestamps_encode_as_unambiguous_seconds() -> None:
    """Epoch-ms ints and datetimes (naive ones as UTC) encode as 'seconds.millis', before 1970 too."""
    naive = datetime(2023, 11, 14, 22, 13, 20, 123_000)
    body = encode_rows(
        [{"a": TS_MS, "b": naive, "c": -1_500, "n": None, "x": 5}], timestamp_columns={"a", "b", "c", "n"}
    )
    assert body.data == b'["1700000000.123","1700000000.123","-1.500",null,5]\n'


def test_rows_with_different_fields_encode_by_name() -> None:
    """A batch whose rows differ in fields falls back to JSONEachRow so omitted columns get defaults."""
    body = encode_rows([{"a": 1, "b": 2}, {"a": 3}], timestamp_columns=())
    assert (body.format, body.columns, body.data) == ("JSONEachRow", None, b'{"a":1,"b":2}\n{"a":3}\n')


async def test_unreachable_server_is_unavailable_without_leaking_password() -> None:
    """A server that refuses connections raises ClickHouseUnavailable whose message omits the password."""
    with pytest.raises(ClickHouseUnavailable) as caught:
        await open_store("http://u:s3cret@127.0.0.1:1/db", Path("unused"))
    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)
