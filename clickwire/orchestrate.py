"""Start and stop every clickwire service as background processes (``clickwire up``).

Each service runs as ``python -m clickwire <service>``, tracked by a pid file under
``$CLICKWIRE_HOME/run`` and logging to ``$CLICKWIRE_HOME/logs/<service>.log``; ``clickwire stack
down`` stops them before the broker. A service counts as up when its health endpoint answers 200.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from clickwire import procs
from clickwire.errors import StackError


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service and how to know it is healthy."""

    name: str
    health_url: str


def default_services(env: Mapping[str, str] | None = None) -> list[ServiceSpec]:
    """The services in start order, with health URLs from the same settings they will read."""
    e = os.environ if env is None else env
    api = f"http://127.0.0.1:{e.get('CLICKWIRE_API_PORT', '8000')}/health"
    red = f"http://127.0.0.1:{e.get('CLICKWIRE_REDIRECTOR_PORT', '8080')}/_/health"
    sink = f"http://127.0.0.1:{e.get('CLICKWIRE_SINK_PORT', '9102')}/health"
    return [
        ServiceSpec("sink", sink),
        ServiceSpec("enricher", "http://127.0.0.1:9101/health"),
        ServiceSpec("dispatcher", "http://127.0.0.1:9103/health"),
        ServiceSpec("patterns", "http://127.0.0.1:9104/health"),
        ServiceSpec("api", api),
        ServiceSpec("redirector", red),
    ]


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_service(home: Path, spec: ServiceSpec, env: Mapping[str, str]) -> procs.Managed:
    """Start one service unless it is already running."""
    running = procs.read(home, spec.name)
    if running is not None:
        return running
    argv = [sys.executable, "-m", "clickwire", spec.name]
    return procs.start(home, spec.name, argv, marker=f"-m clickwire {spec.name}",
                       log_path=home / "logs" / f"{spec.name}.log", env=dict(env))


async def wait_healthy(home: Path, spec: ServiceSpec, timeout_s: float = 60.0) -> float:
    """Poll the health URL until 200; raise StackError naming the service (with its log) otherwise."""
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if procs.read(home, spec.name) is None:
                raise StackError(f"{spec.name} exited during start: "
                                 f"{_log_tail(home / 'logs' / f'{spec.name}.log')}")
            try:
                async with session.get(spec.health_url) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() - started > timeout_s:
                raise StackError(f"{spec.name} not healthy at {spec.health_url} after {timeout_s:g} s: "
                                 f"{_log_tail(home / 'logs' / f'{spec.name}.log')}")
            await asyncio.sleep(0.2)


async def up(home: Path, env: Mapping[str, str], services: list[ServiceSpec] | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Start every service and wait until each is healthy; return seconds to healthy per service."""
    services = services or default_services(env)
    for spec in services:
        start_service(home, spec, env)
    took: dict[str, float] = {}
    for spec in services:
        took[spec.name] = await wait_healthy(home, spec)
        if progress is not None:
            progress(f"{spec.name} healthy ({took[spec.name]:.1f} s)")
    return took


def down(home: Path, services: list[ServiceSpec] | None = None) -> list[str]:
    """Stop the services (not the broker), in reverse start order."""
    stopped = []
    for spec in reversed(services or default_services()):
        if procs.stop(home, spec.name):
            stopped.append(spec.name)
    return stopped
