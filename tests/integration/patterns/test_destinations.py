"""Destination checks and blocklist flips against the real broker and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from tests.integration.patterns.conftest import Kit, link, summary

pytestmark = [pytest.mark.kafka]


@dataclass
class Site:
    """A destination whose status the test sets; counts the checks it answers."""

    status: int = 200
    hits: int = 0
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        """Answer every path with the current status."""
        self.hits += 1
        return web.Response(status=self.status)


@pytest_asyncio.fixture(loop_scope="session")
async def site() -> AsyncIterator[Site]:
    """A destination server on 127.0.0.1."""
    s = Site()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    s.port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield s
    finally:
        await runner.cleanup()


async def wait_hits(site: Site, more: int, timeout_s: float = 20.0) -> None:
    """Wait until the site answered ``more`` further checks."""
    target = site.hits + more
    deadline = time.monotonic() + timeout_s
    while site.hits < target:
        assert time.monotonic() < deadline, f"only {site.hits} checks of {target}"
        await asyncio.sleep(0.02)


async def test_failing_destination_reported_once_per_run_and_blocked_once(kit: Kit, site: Site) -> None:
    """A destination failing 3 checks in a row is reported once (not again after a restart while it keeps
    failing), again only after it recovered and failed anew; a blocklist flip is reported once."""
    ws = "ws_dest"
    await kit.thresholds(ws, {"destinations": {"fail_after": 3}})
    lk = link(ws, destination=f"http://127.0.0.1:{site.port}/landing")
    site.status = 503
    await kit.start()
    await kit.link(lk)
    first = await kit.derived(lambda es: len(es) >= 1)
    assert [(e["type"], e["entity_id"]) for e in first] == [("link.destination_failing", lk["id"])]
    data = orjson.loads(first[0]["data_json"])
    assert data["check"]["consecutive_failures"] == 3
    assert data["check"]["last_status"] == 503

    await kit.stop_all()  # the run of failures and its report survive a restart
    await kit.start()
    await wait_hits(site, 5)
    site.status = 200
    await wait_hits(site, 2)  # recovered
    site.status = 500
    await wait_hits(site, 4)  # failing anew
    events = await kit.derived(lambda es: len(es) >= 2)

    blocked = dict(lk, blocked=True, updated_ms=int(time.time() * 1000), destination_flags=["blocklisted"])
    await kit.link(blocked)
    await kit.link(blocked)  # the same version again (a re-published record) is not a new flip
    events = await kit.derived(lambda es: len(es) >= 3, settle_s=1.5)
    assert Counter(e["type"] for e in events) == {"link.destination_failing": 2, "link.blocked": 1}, summary(events)
    assert len({e["event_id"] for e in events}) == 3
    second = orjson.loads(events[1]["data_json"])
    assert second["check"]["last_status"] == 500
    print(f"\ndetection delay, check/link change -> derived event produced (ms): "
          f"{ {e['type']: e['detected_ms'] - e['created_ms'] for e in events} }")
