"""`clickwire sql "SELECT ..."`: read-only SQL against whichever ClickHouse is configured.

With CLICKWIRE_CLICKHOUSE_URL set the query goes straight to that server (readonly=1). Otherwise
ClickHouse is embedded in the `clickwire sink` process, the only one allowed to open it, so the
query goes to the sink's /sql endpoint (CLICKWIRE_SINK_URL, default http://127.0.0.1:9102).
"""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from datetime import date, datetime
from typing import Annotated, Any

import orjson
import typer

from clickwire.cli import app, one_line_errors

FORMATS = ("table", "csv", "json")


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise typer.BadParameter(f"{pair!r} is not name=value", param_hint="--param")
        params[key] = value
    return params


async def run_sql(sql: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of a read-only query on the configured ClickHouse (server URL, or the sink's /sql)."""
    from services.sink.settings import SqlClientSettings

    settings = SqlClientSettings.from_env()
    if settings.common.clickhouse_url is not None:
        from clickwire.clickhouse import open_store

        store = await open_store(settings.common.clickhouse_url, settings.common.clickhouse_dir)
        try:
            return await store.query_readonly(sql, params)
        finally:
            await store.close()
    from services.sink.client import SqlClient

    async with SqlClient(settings.sink_url) as client:
        return await client.query(sql, params)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows printed as an aligned table, CSV with a header, or a JSON array of objects."""
    if fmt == "json":
        return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()
    columns = list(rows[0]) if rows else []
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(r[c]) for c in columns] for r in rows)
        return out.getvalue().rstrip("\n")
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, show_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    out = io.StringIO()
    Console(width=max(80, min(400, 16 * len(columns))), file=out, color_system=None).print(table)
    return out.getvalue().rstrip("\n") + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})"


@app.command("sql")
@one_line_errors
def sql_cmd(
    query: Annotated[str, typer.Argument(help="One read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
    param: Annotated[list[str] | None, typer.Option("--param", "-p",
                                                    help="name=value for a {name:Type} placeholder.")] = None,
) -> None:
    """Run read-only SQL on ClickHouse (the configured server, or the sink's /sql) and print the rows."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    rows = asyncio.run(run_sql(query, _parse_params(param or [])))
    sys.stdout.write(render(rows, fmt) + "\n")
