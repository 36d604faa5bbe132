"""``clickwire stack up|down|status|fetch``: the local Kafka broker, topics and migrations."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from clickwire import procs
from clickwire.cli import app, one_line_errors
from clickwire.stack import StackSettings, broker_status, down, fetch_jars, up

stack_app = typer.Typer(help="The local stack: Apache Kafka (KRaft), topics, ClickHouse migrations.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")
console = Console(stderr=True)


def _progress(message: str) -> None:
    console.print(f"[bold cyan]stack[/] {message}")


@stack_app.command("fetch")
@one_line_errors
def fetch_cmd() -> None:
    """Fetch the Kafka broker jars from Maven Central (skipped when present)."""
    s = StackSettings.from_env()
    if not fetch_jars(s, _progress):
        _progress(f"Kafka jars already in {s.libs}")


@stack_app.command("up")
@one_line_errors
def up_cmd(
    migrations: bool = typer.Option(True, help="Apply ClickHouse migrations too."),
) -> None:
    """Start the broker (if not running), create topics, apply migrations. Idempotent."""
    s = StackSettings.from_env()
    started = time.monotonic()
    with console.status("bringing the stack up…"):
        result = asyncio.run(up(s, _progress, migrations=migrations))
    changed = result["fetched"] or result["broker_start_s"] or result["topics_created"] or result["migrations_applied"]
    verb = "up" if changed else "already up, nothing changed"
    _progress(f"{verb} ({time.monotonic() - started:.1f} s); bootstrap {s.common.bootstrap}")


@stack_app.command("down")
@one_line_errors
def down_cmd(
    everywhere: bool = typer.Option(False, "--everywhere",
                                    help="Also stop processes of every clickwire home below CLICKWIRE_HOME."),
) -> None:
    """Stop every process the stack started (services, then the broker)."""
    s = StackSettings.from_env()
    stopped = down(s)
    if everywhere:
        from clickwire.stack import down_everywhere

        stopped += down_everywhere(s.common.home)
    _progress(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


async def _status(s: StackSettings) -> dict[str, Any]:
    from clickwire.kafka import check_topics
    from clickwire.topics import Topic

    broker = broker_status(s)
    report: dict[str, Any] = {"bootstrap": s.common.bootstrap, "broker": None, "topics": {}, "migrations": None,
                              "services": []}
    if broker is not None:
        report["broker"] = {"pid": broker.pid, "rss_mb": round(procs.rss_bytes(broker.pid) / 2**20, 1),
                            "uptime_s": round(procs.uptime_s(broker.pid), 1)}
    report["services"] = [{"name": m.name, "pid": m.pid, "rss_mb": round(procs.rss_bytes(m.pid) / 2**20, 1)}
                          for m in procs.all_managed(s.common.home) if m.name != "kafka"]
    try:
        report["topics"] = await check_topics(s.common, list(Topic))
    except Exception as exc:  # status reports problems, it never fails on them
        report["topics_error"] = str(exc)
    try:
        sql = "SELECT name FROM clickwire.schema_migrations FINAL ORDER BY version"
        if not s.common.clickhouse_url and procs.read(s.common.home, "sink") is not None:
            # The running sink owns the embedded engine: ask it.
            from services.sink.client import SqlClient
            from services.sink.settings import SqlClientSettings

            async with SqlClient(SqlClientSettings.from_env().sink_url) as client:
                rows = await client.query(sql)
        else:
            from clickwire.clickhouse import open_store

            store = await open_store(s.common.clickhouse_url, s.common.clickhouse_dir)
            try:
                rows = await store.query(sql)
            finally:
                await store.close()
        report["migrations"] = [r["name"] for r in rows]
    except Exception as exc:
        report["migrations_error"] = f"{type(exc).__name__}: {exc}"
    return report


@stack_app.command("status")
@one_line_errors
def status_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Report the broker, topics, migrations and services; exit 1 when something is missing."""
    s = StackSettings.from_env()
    s = StackSettings(common=s.common.__class__(**{**s.common.__dict__, "kafka_connect_timeout_s": 3.0}),
                      kafka_port=s.kafka_port, heap_mb=s.heap_mb)
    report = asyncio.run(_status(s))
    healthy = report["broker"] is not None and "topics_error" not in report and "migrations_error" not in report
    report["healthy"] = healthy
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        out = Console()
        table = Table(title=f"clickwire stack — {'healthy' if healthy else 'NOT healthy'}")
        table.add_column("component")
        table.add_column("state")
        b = report["broker"]
        table.add_row("kafka broker", f"pid {b['pid']}, {b['rss_mb']} MB RSS, up {b['uptime_s']} s" if b
                      else "not running (clickwire stack up)")
        if "topics_error" in report:
            table.add_row("topics", report["topics_error"])
        for topic, parts in sorted(report["topics"].items()):
            table.add_row(f"topic {topic}", f"{parts} partitions")
        if "migrations_error" in report:
            table.add_row("clickhouse migrations", report["migrations_error"])
        else:
            table.add_row("clickhouse migrations", ", ".join(report["migrations"] or []) or "none applied")
        for svc in report["services"]:
            table.add_row(f"service {svc['name']}", f"pid {svc['pid']}, {svc['rss_mb']} MB RSS")
        out.print(table)
    raise typer.Exit(0 if healthy else 1)


@app.command("check")
@one_line_errors
def check_cmd() -> None:
    """Check that the configured broker answers and every declared topic exists (exit 2 if not)."""
    from clickwire.kafka import check_topics, wait_for_broker
    from clickwire.settings import CommonSettings
    from clickwire.topics import Topic

    common = CommonSettings.from_env()

    async def run() -> dict[str, int]:
        await wait_for_broker(common)
        return await check_topics(common, list(Topic))

    found = asyncio.run(run())
    print(f"ok: broker {common.bootstrap} answers, {len(found)} topics present")


@app.command("init")
@one_line_errors
def init_cmd() -> None:
    """Create missing topics and apply ClickHouse migrations on the configured broker and ClickHouse."""
    from clickwire.kafka import ensure_topics
    from clickwire.settings import CommonSettings
    from clickwire.stack import apply_clickhouse_migrations

    common = CommonSettings.from_env()

    async def run() -> tuple[list[str], list[str]]:
        return await ensure_topics(common), await apply_clickhouse_migrations(common)

    created, applied = asyncio.run(run())
    print(f"ok: {len(created)} topics created, {len(applied)} migrations applied")


@app.command("settings")
@one_line_errors
def settings_cmd(markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table.")) -> None:
    """List every CLICKWIRE_* variable any service reads, with its expected form and default."""
    from clickwire.settings import load_all_settings

    catalog = load_all_settings()
    if markdown:
        print("| variable | expected | default |")
        print("|---|---|---|")
        for var, (expected, default) in catalog.items():
            print(f"| `{var}` | {expected} | {f'`{default}`' if default else '(unset)'} |")
        return
    for var, (expected, default) in catalog.items():
        print(f"{var:40} {default or '(unset)':28} {expected}")
