"""The local stack: real Apache Kafka started, checked, restarted and stopped by `clickwire stack`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clickwire import procs

CLI = [sys.executable, "-m", "clickwire"]


def run_cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a stack of its own (own home, own ports), torn down after the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKWIRE_")}
    env |= {"CLICKWIRE_HOME": str(tmp_path / "home"), "CLICKWIRE_STACK_KAFKA_PORT": "19192",
            "CLICKWIRE_LOG_LEVEL": "warning"}
    yield env
    run_cli(env, "stack", "down")


@pytest.mark.kafka
@pytest.mark.slow
def test_stack_up_twice_status_and_down(stack_env: dict[str, str]) -> None:
    """`stack up` gives a healthy broker, topics and migrations; a second `up` changes nothing; `down` stops it."""
    first = run_cli(stack_env, "stack", "up")
    assert first.returncode == 0, first.stderr
    home = Path(stack_env["CLICKWIRE_HOME"])
    broker = procs.read(home, "kafka")
    assert broker is not None

    status = run_cli(stack_env, "stack", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    assert report["topics"]["clicks.raw"] == 6
    assert report["topics"]["links"] == 3
    assert report["migrations"], "migrations were not recorded"
    assert 0 < report["broker"]["rss_mb"] < 1024

    started = time.monotonic()
    second = run_cli(stack_env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stderr
    assert procs.read(home, "kafka") == broker, "a second `stack up` must not restart the broker"
    assert time.monotonic() - started < 30

    down = run_cli(stack_env, "stack", "down")
    assert down.returncode == 0
    assert procs.read(home, "kafka") is None
    assert not procs._alive(broker.pid)


@pytest.mark.kafka
def test_stale_pid_file_is_cleaned(tmp_path: Path) -> None:
    """A pid file naming a dead (or foreign) process is detected and removed, and nothing is signalled."""
    home = tmp_path / "home"
    procs.run_dir(home).mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (procs.run_dir(home) / "kafka.pid").write_text(f"{dead.pid}\n/some/server.properties\n")
    assert procs.read(home, "kafka") is None
    assert not (procs.run_dir(home) / "kafka.pid").exists()
    # A live process without our marker (pid reuse) is not ours either.
    (procs.run_dir(home) / "kafka.pid").write_text(f"{os.getpid()}\n/some/server.properties\n")
    assert procs.read(home, "kafka") is None
    assert procs.stop(home, "kafka") is False


@pytest.mark.parametrize("bootstrap", ["nonsense", "127.0.0.1:1"])
def test_bad_bootstrap_fails_fast_with_one_line(bootstrap: str) -> None:
    """A malformed or unreachable CLICKWIRE_KAFKA_BOOTSTRAP fails within 10 s with one line naming it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKWIRE_")}
    env["CLICKWIRE_KAFKA_BOOTSTRAP"] = bootstrap
    started = time.monotonic()
    result = run_cli(env, "check", timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "CLICKWIRE_KAFKA_BOOTSTRAP" in lines[0]
    assert elapsed < 10
