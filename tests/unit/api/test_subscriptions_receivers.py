"""The receiver examples in examples/receivers/ verify what the dispatcher signs, and refuse tampering."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clickwire.settings import REPO_ROOT
from services.dispatcher.signing import new_secret, sign

RECEIVERS = REPO_ROOT / "examples" / "receivers"
COMMANDS = {
    "python": [sys.executable, str(RECEIVERS / "verify.py")],
    "node": ["node", str(RECEIVERS / "verify.mjs")],
    "shell": ["sh", str(RECEIVERS / "verify.sh")],
}


def run(kind: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one example with arguments; skip when its interpreter is not installed."""
    if shutil.which(COMMANDS[kind][0]) is None:
        pytest.skip(f"{COMMANDS[kind][0]} is not installed")
    return subprocess.run([*COMMANDS[kind], *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_example_reproduces_the_specification_test_vector(kind: str) -> None:
    """With no arguments each example verifies the Standard Webhooks test vector."""
    result = run(kind)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_example_verifies_a_rotation_delivery_and_refuses_tampering(kind: str, tmp_path: Path) -> None:
    """A body signed with old and new secrets verifies with either; a changed body or an old timestamp fails."""
    old, new = new_secret(), new_secret()
    body = b'{"created_at":"2026-01-01T00:00:00.000Z","data":{"click":{"country":"FR"}},"id":"evt_1","type":"click"}'
    ts = int(time.time())
    header = sign([new, old], "evt_1", ts, body)
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    for secret in (old, new):
        ok = run(kind, secret, "evt_1", str(ts), header, str(body_file))
        assert (ok.returncode, ok.stdout.strip()) == (0, "ok"), ok.stdout + ok.stderr
    body_file.write_bytes(body.replace(b"FR", b"DE"))
    tampered = run(kind, new, "evt_1", str(ts), header, str(body_file))
    assert tampered.returncode == 1
    assert tampered.stdout.startswith("invalid")
    body_file.write_bytes(body)
    stale = run(kind, new, "evt_1", str(ts), header, str(body_file), str(ts + 301))
    assert stale.returncode == 1
    other = run(kind, new_secret(), "evt_1", str(ts), header, str(body_file))
    assert other.returncode == 1
