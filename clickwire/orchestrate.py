"""Start and stop every clickwire service as background processes (``clickwire up``).

Each service runs as ``python -m clickwire <service>``, tracked by a pid file under
``$CLICKWIRE_HOME/run`` and logging to ``$CLICKWIRE_HOME/logs/<service>.log``; ``clickwire stack
down`` stops them before the broker. A service counts as up when its health endpoint answers 200.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from clickwire import procs
from clickwire.errors import StackError


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service and how to know it is healthy."""

    name: str
    health_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    # The ``clickwire`` command and its options, when they are not just the name (e.g. the dispatcher's
    # two roles as two processes: "dispatcher --role router").
    command: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """What follows ``python -m clickwire``."""
        return self.command or (self.name,)


@dataclass(frozen=True)
class Ports:
    """The port each service listens on (the defaults are the services' own defaults)."""

    api: int = 8000
    redirector: int = 8080
    enricher: int = 9101
    sink: int = 9102
    dispatcher: int = 9103
    patterns: int = 9104


def default_services(ports: Ports | None = None) -> list[ServiceSpec]:
    """The services in start order: each with the variables that give it its port, and its health URL."""
    p = ports or Ports()
    local = "http://127.0.0.1"
    return [
        ServiceSpec("sink", f"{local}:{p.sink}/health", {"CLICKWIRE_SINK_PORT": str(p.sink)}),
        ServiceSpec("enricher", f"{local}:{p.enricher}/health", {"CLICKWIRE_METRICS_PORT": str(p.enricher)}),
        ServiceSpec("dispatcher", f"{local}:{p.dispatcher}/health", {"CLICKWIRE_METRICS_PORT": str(p.dispatcher)}),
        ServiceSpec("patterns", f"{local}:{p.patterns}/health", {"CLICKWIRE_METRICS_PORT": str(p.patterns)}),
        ServiceSpec("api", f"{local}:{p.api}/health", {"CLICKWIRE_API_PORT": str(p.api)}),
        ServiceSpec("redirector", f"{local}:{p.redirector}/_/health",
                    {"CLICKWIRE_REDIRECTOR_PORT": str(p.redirector)}),
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
    argv = [sys.executable, "-m", "clickwire", *spec.argv]
    return procs.start(home, spec.name, argv, marker="-m clickwire " + " ".join(spec.argv),
                       log_path=home / "logs" / f"{spec.name}.log", env={**env, **spec.env})


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
    services = services or default_services()
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
