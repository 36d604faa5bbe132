"""`clickwire enricher` (the Faust worker) and `clickwire enrich` (JSON lines through the same chain)."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import IO

import orjson
import structlog
import typer

from clickwire.cli import app, one_line_errors
from clickwire.deadletter import InvalidMessage
from clickwire.kafka import check_topics, wait_for_broker
from clickwire.logs import configure
from clickwire.observability import HealthServer
from clickwire.service import run
from clickwire.topics import Topic, name
from services.enricher.settings import EnricherSettings

TOPICS = (Topic.CLICKS_RAW, Topic.CLICKS_ENRICHED, Topic.LINKS, Topic.LINK_STATS, Topic.DEAD_LETTERS)


@app.command("enricher")
@one_line_errors
def enricher_command() -> None:
    """Run the enricher: clicks.raw -> geo, device, link, referrer, bot, trust -> clicks.enriched."""
    settings = EnricherSettings.from_env()
    configure("enricher", settings.common.log_level, settings.common.log_format)

    async def main(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    # Fail fast, with one line, before the service machinery starts.
    asyncio.run(_preflight(settings))
    run(main)


async def _preflight(settings: EnricherSettings) -> None:
    await wait_for_broker(settings.common)
    await check_topics(settings.common, TOPICS)


async def serve(settings: EnricherSettings, stop: asyncio.Event) -> None:
    """Run the Faust worker, the links follower and the health server until `stop` is set."""
    import faust

    from services.enricher.app import EnricherApp

    log = structlog.get_logger("enricher")
    partitions = await check_topics(settings.common, TOPICS)
    enricher_app = EnricherApp(
        settings, partitions=partitions[name(Topic.CLICKS_RAW, settings.common.topic_prefix)])
    links_table = enricher_app.links.follow(settings.common)

    async def health() -> dict[str, object]:
        ok = enricher_app.app.started and links_table.loaded and not enricher_app.delivery_failed
        return {"ok": bool(ok), "links": len(enricher_app.links), "delivery_failed": enricher_app.delivery_failed,
                "links_loaded": links_table.loaded, "enriched": enricher_app.enriched,
                "dead_letters": enricher_app.invalid}

    health_server = HealthServer(health, settings.metrics_host, settings.metrics_port)
    await health_server.start()
    await links_table.start()
    await enricher_app.start_side_clients()

    class _Worker(faust.Worker):
        def install_signal_handlers(self) -> None:
            # clickwire.service owns SIGTERM/SIGINT: they set `stop`, and we stop the worker below.
            pass

    worker = _Worker(enricher_app.app, loop=asyncio.get_running_loop(), override_logging=False,
                     redirect_stdouts=False, quiet=True, daemon=False,
                     loglevel=settings.common.log_level)
    try:
        await links_table.wait_loaded()
        log.info("links loaded", links=len(enricher_app.links))
        await worker.start()
        # Modules, parsers, geo tables and the loaded links (~160k tracked objects) live as long as
        # the process: full collections walking them again and again paused the stream for 100-190 ms
        # on the loaded dev machine, the bulk of the p99 latency at 1,000 clicks/s.
        gc.collect()
        gc.freeze()
        log.info("enricher started", app_id=settings.faust_id, metrics_port=health_server.port)
        await stop.wait()
    finally:
        log.info("enricher stopping")
        # Acks what is in flight before Faust's consumer makes its final commit.
        await enricher_app.drain()
        await worker.stop()
        await enricher_app.stop_side_clients()
        await links_table.stop()
        await health_server.stop()
        log.info("enricher stopped", enriched=enricher_app.enriched)


@app.command("enrich")
@one_line_errors
def enrich_command(
    links: typer.FileText = typer.Option(
        None, "--links", help="JSON lines of link records (link.avsc) to join onto the clicks"),
) -> None:
    """Read raw clicks as JSON lines on stdin, write enriched clicks as JSON lines on stdout."""
    settings = EnricherSettings.from_env()
    bad = enrich_lines(settings, sys.stdin, sys.stdout, sys.stderr, links_file=links)
    if bad:
        raise typer.Exit(1)


def enrich_lines(settings: EnricherSettings, lines: IO[str], out: IO[str], err: IO[str], *,
                 links_file: IO[str] | None = None) -> int:
    """Enrich each JSON line of `lines` to `out`; report bad lines on `err`; return how many were bad."""
    from services.enricher.chain import Enricher
    from services.enricher.links import LinkIndex
    from services.enricher.stream import ClickStream, Source
    from services.enricher.velocity import LocalVelocity

    stream = ClickStream(Enricher(settings.chain), settings.common.schema_registry_url)
    index = LinkIndex()
    if links_file is not None:
        for link_line in links_file:
            if link_line.strip():
                link = orjson.loads(link_line)
                index.apply(f"{link['domain']}/{link['code']}", link)
    velocity = LocalVelocity(settings.velocity_window_s)
    bad = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        src = Source("stdin", 0, lineno)
        try:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidMessage("stdin", 0, lineno, None, b"", "json_error", str(exc)) from exc
            raw = stream.from_json(obj, src)
            value = stream.raw_codec.encode(raw)
            record = stream.enrich(raw, index.get(raw["link_id"]), now_ms=int(time.time() * 1000),
                                   velocity=velocity.hit(raw), value=value, src=src)
            stream.encode(record, value=value, src=src)  # the same contract check as the stream
        except InvalidMessage as exc:
            bad += 1
            err.write(f"line {lineno}: {exc.error_class}: {exc.reason}\n")
            continue
        out.write(orjson.dumps(record).decode() + "\n")
    out.flush()
    return bad
