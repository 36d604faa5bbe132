"""Two `clickwire api` processes on the same topics: alias races, keys via the CLI, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from clickwire.codec import codec_for
from clickwire.kafka import ensure_topics
from clickwire.settings import REPO_ROOT, CommonSettings
from clickwire.topics import Topic
from tests.integration.api.conftest import read_topic, until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROUNDS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(common: CommonSettings, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKWIRE_")}
    env.update(CLICKWIRE_KAFKA_BOOTSTRAP=common.bootstrap, CLICKWIRE_TOPIC_PREFIX=common.topic_prefix,
               CLICKWIRE_HOME=str(home), CLICKWIRE_LOG_LEVEL="warning", CLICKWIRE_KAFKA_CONNECT_TIMEOUT="5",
               **extra)
    return env


def _cli(common: CommonSettings, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clickwire", *args], env=_env(common, home), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


@pytest_asyncio.fixture(loop_scope="session")
async def shared(kafka_common: CommonSettings) -> CommonSettings:
    """Settings with a topic prefix of this test's own, topics created."""
    common = replace(kafka_common, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(common)
    return common


@pytest.fixture
def two_apis(shared: CommonSettings, home: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """Two `clickwire api` processes on free ports sharing one topic prefix, stopped at teardown."""
    procs = []
    try:
        for i in range(2):
            port = _free_port()
            with (home / f"api{i}.log").open("wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "clickwire", "api"], cwd=REPO_ROOT, stdout=log,
                                        stderr=subprocess.STDOUT,
                                        env=_env(shared, home / f"h{i}", CLICKWIRE_API_PORT=str(port)))
            procs.append((proc, f"http://127.0.0.1:{port}"))
        yield procs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _healthy(clients: list[httpx.AsyncClient], procs: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    async def all_up() -> bool:
        for (proc, _), c in zip(procs, clients, strict=True):
            assert proc.poll() is None, f"api exited with {proc.returncode}"
            try:
                if (await c.get("/health")).status_code != 200:
                    return False
            except httpx.TransportError:
                return False
        return True
    await until(all_up, "both API processes healthy", timeout_s=60)


@pytest_asyncio.fixture(loop_scope="session")
async def clients(two_apis: list[tuple[subprocess.Popen[bytes], str]]) -> AsyncIterator[list[httpx.AsyncClient]]:
    cs = [httpx.AsyncClient(base_url=url, timeout=30) for _, url in two_apis]
    try:
        await _healthy(cs, two_apis)
        yield cs
    finally:
        for c in cs:
            await c.aclose()


async def test_concurrent_creates_of_one_alias_give_one_201_and_one_409(
        shared: CommonSettings, home: Path, clients: list[httpx.AsyncClient],
        two_apis: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    """Round after round, the same alias sent to both processes at once is won by exactly one of them."""
    created = _cli(shared, home, "keys", "create", "--workspace", "ws_race", "--name", "race")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cw_")
    assert "shown once" in created.stderr
    for c in clients:
        c.headers["Authorization"] = f"Bearer {token}"

    async def key_accepted() -> bool:
        return all([(await c.get("/v1/links", params={"limit": "1"})).status_code == 200 for c in clients])
    await until(key_accepted, "the CLI-made key accepted by both processes")

    winners: dict[str, str] = {}
    for round_ in range(ROUNDS):
        code = f"race{round_}-{uuid.uuid4().hex[:6]}"
        body = {"code": code, "destination": f"https://example.com/{round_}"}
        responses = await asyncio.gather(*(c.post("/v1/links", json=body) for c in clients))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201, 409], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["reason"] == "alias_taken"
        winners[f"clk.localhost/{code}"] = next(r for r in responses if r.status_code == 201).json()["id"]

    codec = codec_for(Topic.LINKS)
    records = [(k, codec.decode(v)["id"]) for k, v in await read_topic(shared, Topic.LINKS) if v is not None]
    assert sorted(records) == sorted(winners.items())  # exactly one version per alias: the winner's

    # The winner's link is readable from the other process too (it follows the topic).
    some_key, some_id = next(iter(winners.items()))
    for c in clients:
        async def visible(c: httpx.AsyncClient = c) -> bool:
            return (await c.get(f"/v1/links/{some_id}")).status_code == 200
        await until(visible, f"{some_key} visible in both processes")

    listed = _cli(shared, home, "keys", "list", "--workspace", "ws_race")
    key_id = token[3:].split(".")[0]
    assert listed.returncode == 0
    assert key_id in listed.stdout
    assert "active" in listed.stdout
    assert token.split(".")[1] not in listed.stdout
    revoked = _cli(shared, home, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr

    async def refused_everywhere() -> bool:
        return all([(await c.get("/v1/links")).status_code == 401 for c in clients])
    await until(refused_everywhere, "revoked key refused by both processes")

    # SIGTERM: both stop gracefully and exit 0.
    for proc, _ in two_apis:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc, _ in two_apis:
        assert proc.wait(max(0.1, deadline - time.monotonic())) == 0


def test_missing_topics_exit_2_with_one_line(kafka_common: CommonSettings, home: Path) -> None:
    """`clickwire api` against a prefix with no topics exits 2 with one line naming what is missing."""
    common = replace(kafka_common, topic_prefix=f"absent{uuid.uuid4().hex[:6]}.")
    result = _cli(common, home, "api")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "links is missing" in lines[0]
