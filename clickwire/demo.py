"""The demo behind ``make run``: the whole product live on this machine.

1. the stack (broker, topics, migrations) and every service as background processes;
2. a workspace key, five links in two campaigns, and two webhook subscriptions (every event, and
   humans only) pointing at a built-in receiver that verifies every signature;
3. realistic traffic from the simulator;
4. a live terminal view until Ctrl-C (or ``--duration``), then the services stop; the broker stays
   up so the next ``make run`` starts fast (``make down`` stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live

from clickwire import orchestrate
from clickwire.errors import StackError
from clickwire.kafka import make_producer
from clickwire.liveview import ClickTap, consumer_lag, render
from clickwire.receiver import Receiver, serve
from clickwire.simulate import AddressPool, SimStats, Target, simulate
from clickwire.stack import StackSettings, up

DEMO_WORKSPACE = "ws_demo"
DEMO_ENV = {
    # The simulator sends client addresses in X-Forwarded-For from 127.0.0.1.
    "CLICKWIRE_REDIRECTOR_TRUSTED_PROXIES": "127.0.0.1/32",
    # The demo receiver listens on 127.0.0.1, which the SSRF guard refuses unless allowed.
    "CLICKWIRE_WEBHOOK_ALLOW_NETS": "127.0.0.1/32",
    "CLICKWIRE_API_DEFAULT_DOMAIN": "clk.localhost",
}
DEMO_LINKS = (
    {"code": "spring-sale", "destination": "https://shop.example.com/sale", "campaign": "spring",
     "tags": ["sale", "email"], "utm_source": "newsletter", "utm_medium": "email"},
    {"code": "spring-shoes", "destination": "https://shop.example.com/shoes", "campaign": "spring",
     "tags": ["sale"]},
    {"code": "spring-app", "destination": "https://apps.example.com/get", "campaign": "spring",
     "tags": ["app"], "rules": []},
    {"code": "launch", "destination": "https://www.example.com/launch", "campaign": "launch",
     "tags": ["social"], "utm_source": "twitter"},
    {"code": "launch-docs", "destination": "https://docs.example.com/", "campaign": "launch", "tags": ["docs"]},
)


@dataclass
class DemoWorld:
    """What the demo created, for the live view and for tests."""

    api_url: str
    redirector_url: str
    token: str
    targets: list[Target] = field(default_factory=list)
    subscriptions: dict[str, str] = field(default_factory=dict)


async def _api(session: aiohttp.ClientSession, method: str, url: str, token: str,
               body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json(content_type=None)


DEMO_SUBSCRIPTIONS: dict[str, dict[str, Any]] = {"all": {"include_bots": True}, "humans": {}}
CLICK_AND_LINK_EVENTS = ["click", "link.created", "link.updated", "link.deleted"]
DERIVED_EVENTS = ["milestone.reached", "traffic.spike", "traffic.suspicious", "link.destination_failing",
                  "link.blocked"]
# Short windows so a few minutes of demo traffic show a spike (the defaults watch hours).
DEMO_THRESHOLDS = {
    "milestones": {"counts": [100, 1000, 10000]},
    "spikes": {"window_s": 15, "baseline_s": 60, "factor": 2.5, "min_count": 20, "cooldown_s": 60},
}
# The demo's traffic cycle: steady, then a spike of human clicks from one country.
CYCLE_S = 40.0


async def create_world(env: dict[str, str], receiver: Receiver, receiver_url: str,
                       say: Callable[[str], None],
                       subscriptions: dict[str, dict[str, Any]] | None = None) -> DemoWorld:
    """Mint a key, create links and subscriptions (path -> filters) through the API; return what was made."""
    from clickwire.settings import CommonSettings
    from services.api.keys import new_key, publish_key

    common = CommonSettings.from_env(env)
    api_url = f"http://127.0.0.1:{env.get('CLICKWIRE_API_PORT', '8000')}"
    world = DemoWorld(api_url, f"http://127.0.0.1:{env.get('CLICKWIRE_REDIRECTOR_PORT', '8080')}", "")
    key, world.token = new_key(DEMO_WORKSPACE, "demo")
    producer = make_producer(common, linger_ms=0)
    await producer.start()
    try:
        await publish_key(common, producer, key)
    finally:
        await producer.stop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.monotonic() + 20
        while (await _api(session, "GET", f"{api_url}/v1/links?limit=1", world.token))[0] == 401:
            if time.monotonic() > deadline:
                raise StackError("the API did not see the demo key within 20 s")
            await asyncio.sleep(0.1)
        # Subscriptions of an earlier demo still point at this receiver with secrets it no longer
        # has: remove them so every delivery the receiver sees is one it can verify.
        while True:
            _, listing = await _api(session, "GET", f"{api_url}/v1/webhooks?limit=100", world.token)
            for old in listing.get("data", []):
                await _api(session, "DELETE", f"{api_url}/v1/webhooks/{old['id']}", world.token)
            if not listing.get("next_cursor"):
                break
        for path, filters in (subscriptions or DEMO_SUBSCRIPTIONS).items():
            events = CLICK_AND_LINK_EVENTS + (DERIVED_EVENTS if path == "all" else [])
            request: dict[str, Any] = {"url": f"{receiver_url}/{path}", "description": f"demo: {path}",
                                       "event_types": events, "filters": filters}
            if path == "all":
                # Every click of the demo, bots included, at up to ~400/s during spikes: one request
                # at a time per subscription (that is what keeps order) needs batches to keep up.
                request |= {"mode": "batch", "batch_max": 50, "batch_ms": 20}
            status, body = await _api(session, "POST", f"{api_url}/v1/webhooks", world.token, request)
            if status != 201:
                raise StackError(f"creating the demo webhook failed: {status} {body}")
            receiver.add_secret(body["secret"])
            world.subscriptions[path] = body["id"]
        say("subscribed " + ", ".join(f"{receiver_url}/{path}" for path in world.subscriptions))
        status, body = await _api(session, "PUT", f"{api_url}/v1/settings/events", world.token, DEMO_THRESHOLDS)
        if status != 200:
            raise StackError(f"setting the demo's event thresholds failed: {status} {body}")
        status, body = await _api(session, "POST", f"{api_url}/v1/links", world.token,
                                  {"links": [dict(link, code=f"{link['code']}-{int(time.time()) % 100000}")
                                             for link in DEMO_LINKS]})
        if status not in (201, 207):
            raise StackError(f"creating demo links failed: {status} {body}")
        for result in body["results"]:
            if result["status"] != 201:
                raise StackError(f"creating a demo link failed: {result}")
            link = result["link"]
            world.targets.append(Target(link["domain"], link["code"], time.time(), link.get("campaign") or ""))
        say(f"created {len(world.targets)} links: " + ", ".join(t.code for t in world.targets))
    return world


async def _traffic(world: DemoWorld, rate: float, duration_s: float | None, stats: SimStats,
                   pool: AddressPool) -> SimStats:
    """Cycles of steady traffic ending in a spike from one country, until the duration is over."""
    deadline = time.monotonic() + (duration_s if duration_s is not None else 365 * 86400.0)
    cycle = 0
    while (left := deadline - time.monotonic()) > 1:
        await simulate(world.redirector_url, world.targets, rate=rate, duration_s=min(CYCLE_S, left), stats=stats,
                       pool=pool, pattern="spike", country=("FR", "JP", "BR")[cycle % 3], seed=cycle)
        cycle += 1
    return stats


async def run_demo(*, rate: float, duration_s: float | None, receiver_port: int = 9200) -> SimStats:
    """Run the whole demo; returns what the simulator saw."""
    console = Console(stderr=True)

    def say(message: str) -> None:
        console.print(f"[bold magenta]demo[/] {message}")

    env = {**os.environ, **{k: v for k, v in DEMO_ENV.items() if k not in os.environ}}
    stack = StackSettings.from_env(env)
    env = stack.service_env(env)
    await up(stack, lambda m: console.print(f"[bold cyan]stack[/] {m}"))
    home = stack.common.home
    await orchestrate.up(home, env, progress=lambda m: console.print(f"[bold green]up[/] {m}"))
    receiver = Receiver([])
    runner = await serve(receiver, "127.0.0.1", receiver_port)
    tap = ClickTap(stack.common)
    sim_stats = SimStats()
    sim_task: asyncio.Task[SimStats] | None = None
    try:
        world = await create_world(env, receiver, f"http://127.0.0.1:{receiver_port}", say)
        await tap.start()
        pool = await asyncio.to_thread(AddressPool, __import__("random").Random(11))
        sim_task = asyncio.create_task(_traffic(world, rate, duration_s, sim_stats, pool))
        started = time.monotonic()
        lag: dict[str, int | None] = {}
        last_lag = 0.0
        with Live(render(tap, receiver.stats, sim_stats, lag, started), console=Console(), refresh_per_second=2,
                  transient=False) as live:
            while not sim_task.done():
                if time.monotonic() - last_lag > 2:
                    with contextlib.suppress(Exception):
                        lag = await consumer_lag(stack.common)
                    last_lag = time.monotonic()
                live.update(render(tap, receiver.stats, sim_stats, lag, started))
                await asyncio.sleep(0.5)
        await sim_task
        # Let the tail of the traffic reach the receiver before reporting.
        deadline = time.monotonic() + 15
        while tap.total < sim_stats.redirected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        s = receiver.stats
        derived = {k: v for k, v in s.by_type.items() if k in DERIVED_EVENTS}
        say(f"derived events received: {derived or 'none yet'}")
        say(f"sent {sim_stats.sent}, redirected {sim_stats.redirected}, 5xx {sim_stats.server_errors}; "
            f"enriched {tap.total}; webhooks accepted {s.accepted} (bad signatures {s.bad_signatures}, "
            f"duplicates dropped {s.duplicates}, out of order {s.out_of_order}); "
            f"click->webhook p50 {s.percentile(50) or 0:.0f} ms p99 {s.percentile(99) or 0:.0f} ms")
    finally:
        if sim_task is not None and not sim_task.done():
            sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sim_task
        await tap.stop()
        await runner.cleanup()
        stopped = orchestrate.down(home)
        say(f"stopped {', '.join(stopped) or 'nothing'}; the broker keeps running (make down stops it)")
    return sim_stats
