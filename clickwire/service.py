"""Running a long-lived service: signals, health server, graceful stop.

``run(main)`` runs ``main(stop)`` where ``stop`` is an :class:`asyncio.Event` set by SIGTERM or
SIGINT; ``main`` drains and returns. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop``; a second one exits immediately."""
    loop = asyncio.get_running_loop()

    def handle(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second signal, exiting now", signal=sig.name)
            os._exit(1)
        log.info("stopping", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a service until a stop signal and its drain finish (uvloop when available)."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await main(stop)

    try:
        import uvloop
    except ImportError:
        asyncio.run(wrapper())
        return
    # The policy, not just uvloop.run(): loops that libraries create on their own threads (Faust's
    # consumer thread in the enricher and the patterns service) are uvloop too.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(wrapper())
