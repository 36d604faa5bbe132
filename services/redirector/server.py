"""One redirector worker's life: load links, start the publisher, serve, drain on stop.

The HTTP server is granian's embedded RSGI server running on this process's own event loop, so
the link followers, the publisher and the redirect handler share one loop and one LinkTable
(docs/performance.md has the measurements that chose it over uvicorn). Several workers are several
processes (see cli.py), each bound to the same port with SO_REUSEPORT, each with its own spool.

Stop order on SIGTERM: stop accepting (granian closes the listener and finishes in-flight
requests), then drain the publisher's queue and spool within CLICKWIRE_REDIRECTOR_DRAIN_S (what
cannot be sent stays in the spool for the next start), then stop following the topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server

from clickwire.codec import codec_for
from clickwire.topics import Topic
from services.redirector.app import RedirectApp
from services.redirector.links import LinkFeeds
from services.redirector.publisher import ClickPublisher
from services.redirector.rawclick import Finisher
from services.redirector.settings import RedirectorSettings
from services.redirector.spool import Spool

log = structlog.get_logger(__name__)


def spool_path(settings: RedirectorSettings, worker: int) -> Any:
    """Where worker `worker` keeps its spool (stable across restarts, so leftovers are replayed)."""
    return settings.common.home / "spool" / f"redirector-w{worker}.spool"


async def serve(settings: RedirectorSettings, stop: asyncio.Event, *, worker: int = 0) -> None:
    """Run one worker until `stop` is set, then drain and return."""
    instance = settings.instance_id if settings.workers == 1 else f"{settings.instance_id}-w{worker}"
    feeds = LinkFeeds(settings.common, settings.domains)
    spool = Spool(spool_path(settings, worker), settings.spool_max_bytes)
    leftover = spool.open()
    if leftover:
        log.warning("spool holds clicks from an earlier run; replaying", bytes=leftover)
    publisher: ClickPublisher | None = None
    server: Server | None = None
    serving: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        await feeds.start()
        if settings.publish:
            header = codec_for(Topic.CLICKS_RAW, settings.common.schema_registry_url).header
            publisher = ClickPublisher(settings.common, spool, queue_max=settings.queue_max,
                                       batch_max=settings.batch_max,
                                       encode=Finisher(instance, settings.trusted_proxies, header).encode)
            await publisher.start()

        def health() -> dict[str, Any]:
            detail: dict[str, Any] = {
                "ok": True, "instance": instance, "uptime_s": round(time.monotonic() - started, 1),
                "publish": settings.publish, **feeds.status(),
            }
            if publisher is not None:
                detail |= {"broker_up": publisher.healthy, "queued": publisher.queued,
                           "published": publisher.published, "spool_bytes": spool.size}
            return detail

        app = RedirectApp(
            feeds.table, feeds.counts, publisher=publisher,
            domains=settings.domains, served_domain=feeds.serves,
            trusted_proxies=settings.trusted_proxies, trust_country_header=settings.trust_country_header,
            health=health,
        )
        server = Server(
            app, address=settings.host, port=settings.port, interface=Interfaces.RSGI,
            websockets=False, log_enabled=False, backlog=2048,
            # Not task_impl=TaskImpl.rust (~9% less CPU per request in a bare test): its placeholder
            # task breaks asyncio's shutdown ("Future object is not initialized", exit status 1).
            # Headers over 16 KiB are refused by granian before they reach the app.
            http1_settings=HTTP1Settings(max_buffer_size=16384, header_read_timeout=10_000),
        )
        serving = asyncio.create_task(server.serve(), name="http")
        log.info("redirector serving", host=settings.host, port=settings.port, worker=worker,
                 links=len(feeds.table), publish=settings.publish, instance=instance)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        if server is not None and serving is not None:
            server.stop()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
        if publisher is not None:
            await publisher.stop(settings.drain_s)
        await spool.close()
        await feeds.stop()
        log.info("redirector stopped", worker=worker)
