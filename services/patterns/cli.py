"""``clickwire patterns``: derived events (milestones, spikes, suspicious traffic, failing and blocked links)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import structlog

from clickwire.cli import app, one_line_errors
from clickwire.kafka import check_topics, create_topics, wait_for_broker
from clickwire.logs import configure
from clickwire.observability import HealthServer
from clickwire.service import run
from clickwire.topics import Topic, name
from services.patterns.settings import PatternsSettings

TOPICS = (Topic.CLICKS_ENRICHED, Topic.LINKS, Topic.EVENTS_DERIVED, Topic.WORKSPACE_SETTINGS)


@app.command("patterns")
@one_line_errors
def patterns_command() -> None:
    """Run the patterns service: clicks.enriched and links -> milestones, spikes, alerts on events.derived."""
    settings = PatternsSettings.from_env()
    configure("patterns", settings.common.log_level, settings.common.log_format)
    # Fail fast, with one line, before the service machinery starts.
    asyncio.run(_preflight(settings))

    async def main(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    run(main)


async def _preflight(settings: PatternsSettings) -> None:
    await wait_for_broker(settings.common)
    await check_topics(settings.common, TOPICS)


async def _wait_running(app: Any, stop: asyncio.Event, timeout_s: float = 60.0) -> None:
    # Ready means partitions assigned and tables recovered: events sent from now on are processed.
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if app.rebalancing is False and app.assignor.assigned_actives() and app.tables.recovery.completed.is_set():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Faust worker was not assigned partitions within {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def serve(settings: PatternsSettings, stop: asyncio.Event,
                on_ready: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Run the Faust worker, the thresholds follower, the destination checker and /health until ``stop``."""
    import faust

    from clickwire.codec import codec_for
    from clickwire.follow import TopicTable
    from services.dispatcher.transport import VettedTransport
    from services.patterns.app import PatternsApp

    log = structlog.get_logger("patterns")
    common = settings.common
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    partitions = await check_topics(common, TOPICS)
    patterns = PatternsApp(settings, click_partitions=partitions[name(Topic.CLICKS_ENRICHED, common.topic_prefix)],
                           link_partitions=partitions[name(Topic.LINKS, common.topic_prefix)])
    codec = codec_for(Topic.WORKSPACE_SETTINGS, common.schema_registry_url)
    workspaces = TopicTable(common, Topic.WORKSPACE_SETTINGS, codec.decode,
                            on_change=lambda key, _old, new: patterns.thresholds.apply(key, new))
    checker: asyncio.Task[None] | None = None

    async def health() -> dict[str, object]:
        return {"ok": bool(patterns.app.started and workspaces.loaded and (checker is None or not checker.done())),
                "workspaces": len(workspaces), "emitted": dict(patterns.emitted),
                "links": len(patterns.link_state)}

    health_server = HealthServer(health, settings.metrics_host, settings.metrics_port)

    class _Worker(faust.Worker):
        def install_signal_handlers(self) -> None:
            # clickwire.service owns SIGTERM/SIGINT: they set `stop`, and we stop the worker below.
            pass

    # daemon=False: start() returns once the worker runs instead of blocking until it stops.
    worker = _Worker(patterns.app, loop=asyncio.get_running_loop(), override_logging=False, daemon=False,
                     redirect_stdouts=False, quiet=True, loglevel=common.log_level)
    transport = VettedTransport(allow_nets=settings.allow_nets, connect_timeout_s=settings.check_timeout_s,
                                total_timeout_s=settings.check_timeout_s, max_body_bytes=1024)
    client = httpx.AsyncClient(transport=transport, follow_redirects=False)
    await health_server.start()
    try:
        await workspaces.start()
        await workspaces.wait_loaded()
        # Faust would create its own topics, but only while its consumer joins the group: on a fresh
        # broker the first assignment can come before they are in the consumer's metadata, and
        # Faust's assignor then skips them ("Ignoring missing topic") -- no derived event at all.
        await create_topics(common, patterns.internal_topics())
        await worker.start()
        await _wait_running(patterns.app, stop)
        if settings.check_destinations:
            checker = asyncio.create_task(patterns.check_destinations(client, stop), name="destination-checks")
        log.info("patterns started", app_id=settings.faust_id, metrics_port=health_server.port)
        if on_ready is not None:
            await on_ready(health_server.port)
        await stop.wait()
    finally:
        log.info("patterns stopping")
        if checker is not None:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await checker
        await worker.stop()
        await client.aclose()
        await workspaces.stop()
        await health_server.stop()
        log.info("patterns stopped", emitted=patterns.emitted)
