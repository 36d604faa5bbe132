"""The sink's read-only /sql endpoint, its client, and `clickwire sql`, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import httpx
import pytest
from typer.testing import CliRunner

from clickwire.cli import _register, app
from clickwire.clickhouse import QueryError, ReadOnlyViolation
from services.sink.client import SqlClient
from services.sink.server import SqlServer

from .helpers import enriched_click

pytestmark = [pytest.mark.clickhouse]


@pytest.fixture
async def server(clickhouse):
    async def health() -> dict:
        return {"ok": True}

    srv = SqlServer(clickhouse, health, port=0, max_rows=3)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def workspace(clickhouse) -> str:
    ws = f"ws_{uuid.uuid4().hex[:10]}"
    await clickhouse.insert("clickwire.clicks", [enriched_click(ws, i, ts_ms=1_700_000_000_000 + i) for i in range(2)])
    return ws


async def test_get_and_post_answer_rows_as_json(server, workspace) -> None:
    """GET with param_* and POST with JSON params both return the rows, typed, with meta."""
    sql = "SELECT count() AS n, min(ts_ms) AS first FROM clickwire.clicks WHERE workspace_id = {ws:String}"
    async with httpx.AsyncClient(base_url=server.url) as http:
        got = await http.get("/sql", params={"query": sql, "param_ws": workspace})
        posted = await http.post("/sql", json={"query": sql, "params": {"ws": workspace}})
        text = await http.post("/sql", params={"param_ws": workspace}, content=sql,
                               headers={"Content-Type": "text/plain"})
    for response in (got, posted, text):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["data"] == [{"n": 2, "first": "2023-11-14T22:13:20+00:00"}]
        assert body["meta"] == [{"name": "n", "kind": None}, {"name": "first", "kind": "datetime"}]
        assert body["truncated"] is False


async def test_writes_are_refused_and_errors_mapped(server, workspace) -> None:
    """Anything but a read is 403, a bad query 400, a missing query 400, and large answers are truncated."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        drop = await http.get("/sql", params={"query": "DROP TABLE clickwire.clicks"})
        sneaky = await http.get("/sql", params={"query": "SELECT 1; DROP TABLE clickwire.clicks"})
        bad = await http.get("/sql", params={"query": "SELECT nope FROM clickwire.clicks"})
        empty = await http.get("/sql")
        many = await http.get("/sql", params={"query": "SELECT number FROM numbers(10)"})
        health = await http.get("/health")
        metrics = await http.get("/metrics")
    assert drop.status_code == 403
    assert sneaky.status_code == 403
    assert bad.status_code == 400
    assert "nope" in bad.json()["error"]
    assert empty.status_code == 400
    assert many.json()["rows"] == 3
    assert many.json()["truncated"] is True
    async with SqlClient(server.url) as client:
        with pytest.raises(QueryError, match="more than 3 rows"):
            await client.query("SELECT number FROM numbers(10)")
    assert health.status_code == 200
    assert b"python_info" in metrics.content or b"# HELP" in metrics.content
    async with SqlClient(server.url) as client:
        rows = await client.query("SELECT count() AS n FROM clickwire.clicks WHERE workspace_id = {ws:String}",
                                  {"ws": workspace})
    assert rows == [{"n": 2}]


async def test_client_returns_store_types_and_store_errors(server, workspace, clickhouse) -> None:
    """SqlClient answers like store.query_readonly (datetimes as datetime) and raises the store's errors."""
    sql = "SELECT click_id, ts_ms, tags FROM clickwire.clicks WHERE workspace_id = {ws:String} ORDER BY ts_ms"
    async with SqlClient(server.url) as client:
        via_http = await client.query(sql, {"ws": workspace})
        with pytest.raises(ReadOnlyViolation):
            await client.query("INSERT INTO clickwire.clicks SELECT * FROM clickwire.clicks")
        with pytest.raises(QueryError):
            await client.query("SELECT nope")
    direct = await clickhouse.query_readonly(sql, {"ws": workspace})
    assert via_http == direct
    assert isinstance(via_http[0]["ts_ms"], datetime)


async def test_clickwire_sql_prints_table_csv_and_json(server, workspace, monkeypatch) -> None:
    """`clickwire sql` reaches the sink's /sql in embedded mode and prints each format."""
    monkeypatch.setenv("CLICKWIRE_SINK_URL", server.url)
    monkeypatch.delenv("CLICKWIRE_CLICKHOUSE_URL", raising=False)
    _register()
    sql = ("SELECT link_id, count() AS n FROM clickwire.clicks WHERE workspace_id = {ws:String}"
           " GROUP BY link_id ORDER BY link_id")

    def run(*args: str):
        return CliRunner().invoke(app, ["sql", sql, "--param", f"ws={workspace}", *args])

    # CliRunner swaps sys.stdout, so one at a time; a thread because the command runs its own loop.
    as_json = await asyncio.to_thread(run, "--format", "json")
    as_csv = await asyncio.to_thread(run, "-f", "csv")
    as_table = await asyncio.to_thread(run)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == [{"link_id": "l0", "n": 1}, {"link_id": "l1", "n": 1}]
    assert as_csv.stdout.splitlines() == ["link_id,n", "l0,1", "l1,1"]
    assert "l0" in as_table.stdout
    assert "(2 rows)" in as_table.stdout
    refused = await asyncio.to_thread(lambda: CliRunner().invoke(app, ["sql", "DROP TABLE clickwire.clicks"]))
    assert refused.exit_code == 2
    assert "DROP is not allowed" in refused.output
