"""One redirector worker's life: load links, start the publisher, serve, drain on stop.

The HTTP server (http1.py: httptools on this process's own uvloop) answers each request on the
event loop's thread, so the link followers, the publisher and the redirect handler share one loop and
one LinkTable (docs/performance.md has the measurements that chose it over granian and uvicorn).
Several workers are several processes (see cli.py), each bound to the same port with SO_REUSEPORT,
each with its own spool.

Stop order on SIGTERM: stop accepting (close the listener and idle connections, let requests whose
head is still arriving finish), then drain the publisher's queue and spool within CLICKWIRE_REDIRECTOR_DRAIN_S (what
cannot be sent stays in the spool for the next start), then stop following the topics.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from clickwire.codec import codec_for
from clickwire.errors import StartupError
from clickwire.topics import Topic
from services.redirector.app import RedirectApp
from services.redirector.http1 import HTTPServer
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
    server: HTTPServer | None = None
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
        server = HTTPServer(app)
        try:
            await server.start(settings.host, settings.port, reuse_port=settings.workers > 1)
        except OSError as e:
            raise StartupError(f"cannot listen on {settings.host}:{settings.port} "
                               f"(CLICKWIRE_REDIRECTOR_HOST / CLICKWIRE_REDIRECTOR_PORT): {e.strerror or e}") from e
        log.info("redirector serving", host=settings.host, port=settings.port, worker=worker,
                 links=len(feeds.table), publish=settings.publish, instance=instance)
        await stop.wait()
    finally:
        if server is not None:
            await server.stop(grace_s=1.0)  # a request head arrives in one packet; slower ones are cut
        if publisher is not None:
            await publisher.stop(settings.drain_s)
        await spool.close()
        await feeds.stop()
        log.info("redirector stopped", worker=worker)
