"""The whole pipeline on one machine, for end-to-end tests, the fault suite and the latency benchmark.

A :class:`Pipeline` owns a broker of its own (so it may stop it), every service as a background
process under its own home and ports, a webhook receiver in this process, and a workspace with
links and one subscription to every click (bots included). It can break each part on purpose
(stop the broker, SIGKILL a service, make ClickHouse writes fail, take the receiver down) and
answer the question that matters afterwards: was every click accounted for, exactly once?
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from clickwire import orchestrate, procs
from clickwire.demo import DemoWorld, create_world
from clickwire.kafka import ensure_topics
from clickwire.receiver import Receiver, serve
from clickwire.stack import StackSettings, fetch_jars, start_broker


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Accounting:
    """Where every redirected click ended up."""

    redirected: int
    in_clickhouse: int
    clickhouse_rows_final: int
    delivered: int
    missing_in_clickhouse: int
    missing_at_receiver: int
    out_of_order: int
    server_errors: int

    @property
    def complete(self) -> bool:
        """Every redirected click is in ClickHouse once and was delivered once, with no 5xx (order is apart)."""
        return (self.redirected == self.in_clickhouse == self.clickhouse_rows_final == self.delivered
                and self.missing_in_clickhouse == 0 and self.missing_at_receiver == 0
                and self.server_errors == 0)


@dataclass
class Pipeline:
    """Broker, services, receiver and a demo workspace under one directory."""

    root: Path
    retry_schedule: str = "0,0.5,1,2,3,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5"
    extra_env: dict[str, str] = field(default_factory=dict)
    say: Callable[[str], None] = lambda _: None

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.kafka_port = free_port()
        self.ports = orchestrate.Ports(api=free_port(), redirector=free_port(), enricher=free_port(),
                                       sink=free_port(), dispatcher=free_port(), patterns=free_port())
        self.receiver_port = free_port()
        self.fail_writes = self.root / "clickhouse-writes-fail"
        self.stack = StackSettings.from_env({"CLICKWIRE_HOME": str(self.home),
                                             "CLICKWIRE_STACK_KAFKA_PORT": str(self.kafka_port),
                                             "CLICKWIRE_KAFKA_CONNECT_TIMEOUT": "20"})
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLICKWIRE_")}
        self.env = base | {
            "CLICKWIRE_HOME": str(self.home),
            "CLICKWIRE_KAFKA_BOOTSTRAP": self.stack.common.bootstrap,
            "CLICKWIRE_KAFKA_CONNECT_TIMEOUT": "20",
            "CLICKWIRE_LOG_LEVEL": "warning",
            "CLICKWIRE_REDIRECTOR_TRUSTED_PROXIES": "127.0.0.1/32",
            "CLICKWIRE_WEBHOOK_ALLOW_NETS": "127.0.0.1/32",
            "CLICKWIRE_DISPATCHER_RETRY_SCHEDULE": self.retry_schedule,
            "CLICKWIRE_SINK_FAIL_WRITES_FILE": str(self.fail_writes),
            "CLICKWIRE_SINK_URL": f"http://127.0.0.1:{self.ports.sink}",
            "CLICKWIRE_API_DEFAULT_DOMAIN": "clk.localhost",
            # create_world finds the API and the redirector through these.
            "CLICKWIRE_API_PORT": str(self.ports.api),
            "CLICKWIRE_REDIRECTOR_PORT": str(self.ports.redirector),
        } | self.extra_env
        self.services = orchestrate.default_services(self.ports)
        self.receiver = Receiver([])
        self._receiver_runner: web.AppRunner | None = None
        self.world: DemoWorld | None = None

    @property
    def redirector_url(self) -> str:
        """Base URL of the redirector."""
        return f"http://127.0.0.1:{self.ports.redirector}"

    async def start(self) -> None:
        """Broker, topics, services, receiver, key, links and the subscription."""
        fetch_jars(self.stack, self.say)
        await start_broker(self.stack)
        await ensure_topics(self.stack.common)
        await orchestrate.up(self.home, self.env, self.services, progress=self.say)
        await self.receiver_up()
        self.world = await create_world(self.env, self.receiver, f"http://127.0.0.1:{self.receiver_port}",
                                        self.say, subscriptions={"all": {"include_bots": True}})

    async def stop(self) -> None:
        """Stop everything this pipeline started."""
        await self.receiver_down()
        orchestrate.down(self.home, self.services)
        procs.stop(self.home, "kafka")

    # --- breaking things -------------------------------------------------------------------------

    def spec(self, name: str) -> orchestrate.ServiceSpec:
        """The service called ``name``."""
        return next(s for s in self.services if s.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL a service (no drain, no commit)."""
        managed = procs.read(self.home, name)
        if managed is not None:
            os.kill(managed.pid, signal.SIGKILL)
            procs.stop(self.home, name, timeout_s=5)

    async def restart(self, name: str) -> float:
        """Start a stopped service again; seconds until healthy."""
        orchestrate.start_service(self.home, self.spec(name), self.env)
        return await orchestrate.wait_healthy(self.home, self.spec(name), timeout_s=90)

    def stop_broker(self) -> None:
        """Stop the broker (SIGTERM, as an operator would)."""
        procs.stop(self.home, "kafka", timeout_s=45)

    async def start_broker(self) -> float:
        """Start the broker again; seconds until it answers."""
        return await start_broker(self.stack)

    def clickhouse_writes_fail(self, failing: bool) -> None:
        """Make every ClickHouse insert of the sink fail (or work again)."""
        if failing:
            self.fail_writes.touch()
        else:
            self.fail_writes.unlink(missing_ok=True)

    async def receiver_up(self) -> None:
        """Serve the receiver."""
        if self._receiver_runner is None:
            self._receiver_runner = await serve(self.receiver, "127.0.0.1", self.receiver_port)

    async def receiver_down(self) -> None:
        """Stop answering webhooks (connections are refused)."""
        if self._receiver_runner is not None:
            await self._receiver_runner.cleanup()
            self._receiver_runner = None

    # --- accounting ------------------------------------------------------------------------------

    async def sql(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Read-only SQL through the sink."""
        from services.sink.client import SqlClient

        async with SqlClient(f"http://127.0.0.1:{self.ports.sink}", timeout_s=30) as client:
            return await client.query(query, params)

    async def account(self, redirected_ids: set[str], server_errors: int) -> Accounting:
        """Compare the clicks clients were redirected for with ClickHouse and the receiver."""
        ws = {"ws": "ws_demo"}
        counts = (await self.sql(
            "SELECT uniqExact(click_id) AS u, (SELECT count() FROM clickwire.clicks FINAL "
            "WHERE workspace_id = {ws:String}) AS f FROM clickwire.clicks WHERE workspace_id = {ws:String}", ws))[0]
        stored = await self._stored_click_ids(ws)
        got = self.receiver.stats.click_ids
        return Accounting(
            redirected=len(redirected_ids), in_clickhouse=int(counts["u"]), clickhouse_rows_final=int(counts["f"]),
            delivered=len(got), missing_in_clickhouse=len(redirected_ids - stored),
            missing_at_receiver=len(redirected_ids - got), out_of_order=self.receiver.stats.out_of_order,
            server_errors=server_errors)

    async def _stored_click_ids(self, ws: dict[str, Any], page: int = 50_000) -> set[str]:
        # Paged by key: the sink's /sql answers at most 100,000 rows, and a long run stores more.
        stored: set[str] = set()
        after = ""
        while True:
            rows = await self.sql(
                "SELECT DISTINCT click_id FROM clickwire.clicks WHERE workspace_id = {ws:String} "
                "AND click_id > {after:String} ORDER BY click_id LIMIT {page:UInt32}",
                ws | {"after": after, "page": page})
            stored.update(r["click_id"] for r in rows)
            if len(rows) < page:
                return stored
            after = rows[-1]["click_id"]

    async def wait_accounted(self, redirected_ids: set[str], server_errors: int, timeout_s: float) -> tuple[
            Accounting, float]:
        """Poll until every redirected click is accounted for (or the deadline); return it and the time taken."""
        started = time.monotonic()
        while True:
            try:
                result = await self.account(redirected_ids, server_errors)
            except Exception:  # the sink may still be restarting; poll again
                result = None
            if result is not None and result.complete:
                return result, time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                if result is None:
                    result = await self.account(redirected_ids, server_errors)
                return result, time.monotonic() - started
            await asyncio.sleep(0.5)
