"""`clickwire sink` killed with SIGKILL mid-stream and restarted on the same home loses and doubles nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from services.sink.client import SqlClient

from .helpers import clicks, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SENT = 12_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SinkProcess:
    """A `clickwire sink` subprocess; stop() kills it if it is still running."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "clickwire", "sink"], env=self._env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def sink_process(topics: CommonSettings, tmp_path: Path) -> Iterator[tuple[SinkProcess, str]]:
    port = _free_port()
    env = {**os.environ, "CLICKWIRE_HOME": str(tmp_path / "home"), "CLICKWIRE_KAFKA_BOOTSTRAP": topics.bootstrap,
           "CLICKWIRE_TOPIC_PREFIX": topics.topic_prefix, "CLICKWIRE_SINK_PORT": str(port),
           "CLICKWIRE_SINK_GROUP": f"sink-{uuid.uuid4().hex[:8]}", "CLICKWIRE_SINK_BATCH_MAX": "400",
           "CLICKWIRE_SINK_FLUSH_MS": "200", "CLICKWIRE_LOG_LEVEL": "info"}
    env.pop("CLICKWIRE_CLICKHOUSE_URL", None)
    sink = SinkProcess(env, tmp_path / "sink.log")
    try:
        yield sink, f"http://127.0.0.1:{port}"
    finally:
        sink.terminate()


async def _counts(client: SqlClient, ws: str) -> dict[str, int] | None:
    try:
        rows = await client.query(
            "SELECT (SELECT count() FROM clickwire.clicks WHERE workspace_id = {ws:String}) AS plain,"
            " (SELECT uniqExact(click_id) FROM clickwire.clicks WHERE workspace_id = {ws:String}) AS uniq,"
            " (SELECT count() FROM clickwire.clicks FINAL WHERE workspace_id = {ws:String}) AS final",
            {"ws": ws})
    except Exception:
        return None  # not up yet
    return {k: int(v) for k, v in rows[0].items()}


async def test_sigkill_mid_stream_then_restart_gives_exact_counts(topics, sink_process) -> None:
    """Clicks keep arriving while the sink is SIGKILLed mid-stream; after a restart every click is there once."""
    sink, url = sink_process
    ws = f"ws_{uuid.uuid4().hex[:10]}"
    sent = clicks(ws, SENT, seed=7)
    sink.start()
    async with SqlClient(url, timeout_s=10) as client:
        async def up() -> bool:
            return await _counts(client, ws) is not None

        await eventually(up, timeout_s=60, what="the sink to answer /sql")
        # Keep producing in slices while the sink writes, so the kill lands between batches or mid-insert.
        producing = asyncio.create_task(_produce_slowly(topics, sent))
        try:
            async def partly() -> bool:
                counts = await _counts(client, ws)
                return counts is not None and counts["uniq"] >= SENT // 4

            await eventually(partly, timeout_s=60, what="a quarter of the clicks")
            at_kill = await _counts(client, ws)
            sink.kill()
            sink.start()
            await producing
        finally:
            producing.cancel()

        async def complete() -> bool:
            counts = await _counts(client, ws)
            return counts is not None and counts["uniq"] >= SENT

        await eventually(complete, timeout_s=90, what="every click after the restart")
        counts = await _counts(client, ws)
    assert at_kill is not None
    assert counts is not None
    assert at_kill["uniq"] < SENT, "the kill must land before everything is written"
    assert counts["uniq"] == SENT
    assert counts["final"] == SENT
    assert sink.terminate() == 0


async def _produce_slowly(topics: CommonSettings, sent: list[dict]) -> None:
    for start in range(0, len(sent), 1000):
        await produce(topics, Topic.CLICKS_ENRICHED, sent[start:start + 1000])
        await asyncio.sleep(0.1)  # pacing the producer, not waiting for anything
