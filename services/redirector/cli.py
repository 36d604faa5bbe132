"""`clickwire redirector`: check the broker and topics, then serve redirects until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from types import FrameType

import typer

from clickwire import logs, service
from clickwire.cli import app, one_line_errors
from clickwire.kafka import check_topics, wait_for_broker
from clickwire.topics import Topic
from services.redirector.settings import RedirectorSettings

NEEDED_TOPICS = (Topic.LINKS, Topic.LINK_STATS, Topic.CLICKS_RAW)


@app.command("redirector")
@one_line_errors
def redirector(
    worker: int = typer.Option(-1, "--worker", hidden=True, help="internal: run as worker N of a pool"),
) -> None:
    """Serve GET/HEAD /{code} redirects and publish every click to Kafka (settings: CLICKWIRE_REDIRECTOR_*)."""
    settings = RedirectorSettings.from_env()
    logs.configure("redirector", settings.common.log_level, settings.common.log_format)
    # While the broker is away aiokafka logs every refused connection, thousands a second; the
    # publisher logs the outage once per change of state and exposes it in /_/health and metrics.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if worker < 0:
        asyncio.run(_preflight(settings))
        if settings.workers > 1:
            raise typer.Exit(_run_pool(settings))
        worker = 0

    from services.redirector.server import serve

    async def main(stop: asyncio.Event) -> None:
        await serve(settings, stop, worker=worker)

    service.run(main)


async def _preflight(settings: RedirectorSettings) -> None:
    await wait_for_broker(settings.common)
    await check_topics(settings.common, NEEDED_TOPICS)


def _run_pool(settings: RedirectorSettings) -> int:
    """Start one process per worker on the same port (SO_REUSEPORT); forward stop signals; wait."""
    children = [
        # Our own interpreter and module, arguments we built: nothing from outside the process.
        subprocess.Popen([sys.executable, "-m", "clickwire", "redirector", "--worker", str(i)], env=os.environ)  # noqa: S603
        for i in range(settings.workers)
    ]

    def forward(signum: int, _: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
