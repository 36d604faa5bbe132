"""``clickwire dispatcher`` as a process: starts, answers /health, stops on SIGTERM; refuses missing topics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clickwire.settings import REPO_ROOT, CommonSettings

pytestmark = [pytest.mark.kafka]


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(common: CommonSettings, home: Path, prefix: str, port: int) -> dict[str, str]:
    """The environment of a dispatcher process on the test broker."""
    return {**os.environ, "CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap, "CLICKWIRE_TOPIC_PREFIX": prefix,
            "CLICKWIRE_HOME": str(home), "CLICKWIRE_METRICS_PORT": str(port),
            "CLICKWIRE_KAFKA_CONNECT_TIMEOUT": "5"}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test, killed at teardown if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes


def start(env: dict[str, str], processes: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    """Run ``clickwire dispatcher`` with ``args``."""
    command = [str(Path(sys.executable).parent / "clickwire"), "dispatcher", *args]
    # Logs go to stderr; stdout is unused, so only stderr is piped (and read at exit).
    proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    processes.append(proc)
    return proc


async def test_dispatcher_serves_health_and_stops_on_sigterm(topics: CommonSettings, tmp_path: Path,
                                                            processes: list[subprocess.Popen[bytes]]) -> None:
    """The process reports healthy on its metrics port and exits 0 after SIGTERM."""
    port = free_port()
    proc = start(env_for(topics, tmp_path, topics.topic_prefix, port), processes, "--role", "all")
    deadline = time.monotonic() + 40
    health = None
    async with httpx.AsyncClient() as client:
        while health is None:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline
            try:
                resp = await client.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if resp.status_code == 200:
                    health = resp.json()
            except httpx.TransportError:
                pass
        metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert health["role"] == "all"
    assert "deliverer" in health
    assert "router" in health
    assert b"clickwire_webhook_attempts_total" in metrics.content or b"python_info" in metrics.content
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_missing_topics_exit_2_with_one_line(kafka: CommonSettings, tmp_path: Path,
                                             processes: list[subprocess.Popen[bytes]]) -> None:
    """Under a prefix with no topics the command prints one line naming them and exits 2."""
    proc = start(env_for(kafka, tmp_path, "nosuch.", free_port()), processes, "--role", "deliverer")
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1
    assert "nosuch.webhooks.outbox is missing" in lines[0]
