"""`clickwire sink`: write the click, link, attempt and dead-letter topics to ClickHouse, serve /sql."""

from __future__ import annotations

import asyncio
from typing import Any

from clickwire.cli import app, one_line_errors


async def serve(stop: asyncio.Event) -> None:
    """Run the sink until `stop`: check Kafka, open ClickHouse, serve /sql, write batches, drain."""
    from clickwire.clickhouse import ClickHouseStore, apply_migrations, open_store
    from clickwire.kafka import check_topics, wait_for_broker
    from clickwire.logs import configure
    from clickwire.topics import Topic
    from services.sink.faults import FailWhileFileExists
    from services.sink.server import SqlServer
    from services.sink.settings import SinkSettings
    from services.sink.writer import SINK_TOPICS, BatchWriter

    settings = SinkSettings.from_env()
    common = settings.common
    log = configure("sink", common.log_level, common.log_format)
    await wait_for_broker(common)
    await check_topics(common, [*SINK_TOPICS, Topic.DEAD_LETTERS])
    opened = await open_store(common.clickhouse_url, common.clickhouse_dir)
    try:
        # The sink owns the engine in embedded mode, so it brings the schema up to date itself.
        applied = await apply_migrations(opened)
        store: ClickHouseStore = opened
        if settings.fail_writes_file is not None:
            store = FailWhileFileExists(opened, settings.fail_writes_file)
        writer = BatchWriter(settings, store)

        async def health() -> dict[str, Any]:
            return {**writer.health(), "clickhouse": await opened.ping()}

        server = SqlServer(store, health, host=settings.host, port=settings.port, max_rows=settings.sql_max_rows)
        await server.start()
        try:
            await writer.start()
            log.info("sink started", sql=f"{server.url}/sql", group=settings.group_id,
                     engine="server" if common.clickhouse_url else f"embedded {common.clickhouse_dir}",
                     migrations_applied=applied, batch_max=settings.batch_max, flush_ms=settings.flush_ms)
            await writer.run(stop)
            log.info("sink stopped", rows_written=writer.rows_written)
        finally:
            await server.stop()
    finally:
        await opened.close()


@app.command("sink")
@one_line_errors
def sink_cmd() -> None:
    """Write enriched clicks, links, webhook attempts and dead letters to ClickHouse; serve read-only /sql."""
    from clickwire.service import run

    run(serve)
