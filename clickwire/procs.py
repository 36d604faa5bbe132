"""Background processes started by clickwire, tracked by pid files under ``$CLICKWIRE_HOME/run``.

A pid file is trusted only if the process it names is alive *and* its command line carries the
marker we started it with, so a stale pid reused by another program after a crash is never
signalled; such a file is removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Popen objects of children this process started: kept so they are reaped (and not reported
# by Python as "still running" when collected) while the child outlives the call that made it.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Managed:
    """One background process clickwire started."""

    name: str
    pid: int
    marker: str


def run_dir(home: Path) -> Path:
    """Directory of pid files."""
    return home / "run"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read(home: Path, name: str) -> Managed | None:
    """The live process recorded under ``name``, or None (cleaning a stale pid file)."""
    path = run_dir(home) / f"{name}.pid"
    try:
        pid_text, marker = path.read_text().split("\n", 1)
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    marker = marker.strip()
    child = _children.get(pid)
    if child is not None and child.poll() is None:
        # Our own child: trust it even before exec() has replaced its command line.
        return Managed(name, pid, marker)
    if _alive(pid) and marker in _cmdline(pid):
        return Managed(name, pid, marker)
    path.unlink(missing_ok=True)
    return None


def all_managed(home: Path) -> list[Managed]:
    """Every live process recorded under this home."""
    found = []
    directory = run_dir(home)
    if directory.is_dir():
        for path in sorted(directory.glob("*.pid")):
            m = read(home, path.stem)
            if m is not None:
                found.append(m)
    return found


def start(home: Path, name: str, argv: list[str], *, marker: str, log_path: Path,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Managed:
    """Start ``argv`` detached (own session), log to ``log_path``, record its pid."""
    run_dir(home).mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by clickwire, never from user input
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
        )
    _children[proc.pid] = proc
    (run_dir(home) / f"{name}.pid").write_text(f"{proc.pid}\n{marker}\n")
    return Managed(name, proc.pid, marker)


def stop(home: Path, name: str, *, timeout_s: float = 30.0) -> bool:
    """SIGTERM the process (then SIGKILL after the timeout); True when one was running."""
    managed = read(home, name)
    if managed is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(managed.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(managed.pid) and time.monotonic() < deadline:
        _reap(managed.pid)
        time.sleep(0.05)
    if _alive(managed.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(managed.pid, signal.SIGKILL)
        while _alive(managed.pid):
            _reap(managed.pid)
            time.sleep(0.02)
    _reap(managed.pid)
    (run_dir(home) / f"{name}.pid").unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    # Only our own children can be reaped; others are reaped by init.
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def uptime_s(pid: int) -> float:
    """Seconds since the process started, 0 when unknown."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[19])
        boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, boot_uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
