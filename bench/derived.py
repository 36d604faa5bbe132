"""Derived-events benchmark: detection delay, trigger time -> webhook received, per derived event type.

A whole pipeline of its own (clickwire.pipeline: own broker, every service as a process) and a
receiver in this process verifying signatures, with one single-mode subscription per derived
event type (so no event waits behind another type in a subscription's FIFO). Each pattern is
driven through the real path and repeated ``reps`` times on fresh links:

- milestone.reached, traffic.spike, traffic.suspicious: real clicks sent to the redirector
  (simulator requests: browser humans from one country, crawlers from cloud networks), then
  enricher -> patterns -> router -> deliverer -> receiver. The trigger is the click that completed
  the pattern; the event's ``created_at`` is that click's ``ts_ms`` (stamped by the redirector).
- link.destination_failing: a destination served by a local HTTP server passes a check, then
  answers 503; the checker (HEAD through the SSRF-vetting transport) reports it after
  ``fail_after`` failed checks. ``created_at`` is the time of the check that completed the run;
  the delay from the moment the destination started failing is bounded by about
  ``fail_after`` x ``CLICKWIRE_PATTERNS_CHECK_INTERVAL`` and is reported too.
- link.blocked: a link created through the API, then its host appended to the API's blocklist
  file; the API re-publishes the link blocked and the patterns service reports it. ``created_at``
  is the blocked version's ``updated_ms``; the delay from the file write adds the API's
  blocklist poll (``CLICKWIRE_API_BLOCKLIST_POLL``) and is reported too.

The click-driven links and the failing link are written to the links topic directly (the API
refuses 127.0.0.1 destinations, and nothing outside this machine should be probed by the checker).
Standalone: ``python -m bench.derived [--reps 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from clickwire import orchestrate
from clickwire.codec import codec_for
from clickwire.destinations import DEFAULT_BLOCKLIST_PATH
from clickwire.kafka import ensure_topics, make_producer
from clickwire.links import Link
from clickwire.pipeline import Pipeline
from clickwire.receiver import Receiver
from clickwire.settings import CommonSettings
from clickwire.simulate import AddressPool, Target, build_request
from clickwire.stack import fetch_jars, start_broker
from clickwire.topics import Topic, name

WORKSPACE = "ws_bench_derived"
DOMAIN = "clk.localhost"
EVENT_TYPES = ("milestone.reached", "traffic.spike", "traffic.suspicious", "link.destination_failing",
               "link.blocked")
CHECK_INTERVAL_S = 1.0
BLOCKLIST_POLL_S = 1.0  # the API's default
MILESTONE = 5
THRESHOLDS: dict[str, Any] = {
    # Small numbers so a run takes seconds; the delay does not depend on the count reached.
    "milestones": {"counts": [MILESTONE], "entities": ["link"]},
    "spikes": {"window_s": 1, "baseline_s": 10, "factor": 3.0, "min_count": 10, "cooldown_s": 600,
               "dimensions": ["country"], "entities": ["link"]},
    "suspicious": {"window_s": 600, "min_count": 10, "min_share": 0.5, "trust_below": 40, "ip_min": 1000,
                   "asn_min": 100_000},
    "destinations": {"fail_after": 3},
}
WAIT_S = 30.0
# Clicks beyond what a pattern needs: the simulator's residential address pool holds a few cloud
# addresses (e.g. Oracle's) whose "human" clicks the enricher rightly calls bots. The event's
# created_at is still the click that completed the pattern, whichever it was.
EXTRA = 4


def _created_ms(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp() * 1000


@dataclass
class Arrivals:
    """The first delivery of each (event type, link id), with the wall-clock time it was accepted."""

    got: dict[tuple[str, str], tuple[dict[str, Any], float]] = field(default_factory=dict)

    def on_event(self, event: dict[str, Any], _latency: float) -> None:
        """Receiver callback: called once per verified, de-duplicated event."""
        link = (event.get("data") or {}).get("link") or {}
        self.got.setdefault((str(event.get("type")), str(link.get("id"))), (event, time.time()))

    async def wait(self, event_type: str, link_id: str, timeout_s: float = WAIT_S) -> tuple[dict[str, Any], float]:
        """The event and its arrival time; raises after the deadline."""
        deadline = time.monotonic() + timeout_s
        while (event_type, link_id) not in self.got:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event_type} webhook for {link_id} within {timeout_s:g} s")
            await asyncio.sleep(0.005)
        return self.got[(event_type, link_id)]


@dataclass
class Site:
    """Destinations on 127.0.0.1 whose status the benchmark sets per path; counts the checks per path."""

    status: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """Answer with the path's status (200 when unset)."""
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        return web.Response(status=self.status.get(request.path, 200))

    async def start(self) -> None:
        """Listen on a free port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop listening."""
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_hits(self, path: str, n: int, timeout_s: float = WAIT_S) -> None:
        """Wait until ``path`` was checked ``n`` times."""
        deadline = time.monotonic() + timeout_s
        while self.hits.get(path, 0) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} checked {self.hits.get(path, 0)} times, not {n}, in {timeout_s:g} s")
            await asyncio.sleep(0.01)


class Bench:
    """The pipeline, its API key, and the helpers that drive each pattern."""

    def __init__(self, pipeline: Pipeline, arrivals: Arrivals, site: Site, pool: AddressPool) -> None:
        self.pipeline = pipeline
        self.arrivals = arrivals
        self.site = site
        self.pool = pool
        self.rng = random.Random(3)
        self.common = CommonSettings.from_env(pipeline.env)
        self.producer = make_producer(self.common, linger_ms=0)
        self.api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline.ports.api}", timeout=30)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.blocklist = pipeline.root / "blocklist.txt"

    async def close(self) -> None:
        """Close the clients."""
        await self.http.close()
        await self.api.aclose()
        await self.producer.stop()

    async def setup(self) -> None:
        """A key, the thresholds and one subscription per derived event type, through the API."""
        from services.api.keys import new_key, publish_key

        await self.producer.start()
        key, token = new_key(WORKSPACE, "bench")
        await publish_key(self.common, self.producer, key)
        self.api.headers["Authorization"] = f"Bearer {token}"
        await _until(lambda: _status(self.api.get("/v1/links?limit=1"), 200), "the API accepting the key")
        r = await self.api.put("/v1/settings/events", json=THRESHOLDS)
        r.raise_for_status()
        receiver = f"http://127.0.0.1:{self.pipeline.receiver_port}"
        for event_type in EVENT_TYPES:
            r = await self.api.post("/v1/webhooks", json={"url": f"{receiver}/{event_type}",
                                                          "event_types": [event_type]})
            r.raise_for_status()
            self.pipeline.receiver.add_secret(r.json()["secret"])

    async def link(self, kind: str, path: str = "/ok") -> Link:
        """A fresh link of the workspace on the links topic, its destination on the local site."""
        code = f"{kind}{uuid.uuid4().hex[:10]}"
        now = int(time.time() * 1000)
        link = Link(id=f"lnk_{code}", workspace_id=WORKSPACE, domain=DOMAIN, code=code,
                    destination=f"http://127.0.0.1:{self.site.port}{path}", created_ms=now, updated_ms=now)
        await self.producer.send_and_wait(name(Topic.LINKS, self.common.topic_prefix),
                                          codec_for(Topic.LINKS).encode(link.to_avro()), key=link.key.encode())
        return link

    async def click(self, link: Link, kind: str, country: str | None = None) -> int:
        """One simulated click on the redirector; its status."""
        method, headers = build_request(kind, Target(link.domain, link.code), self.pool, self.rng,
                                        hammer_ip="203.0.113.7", country=country)
        async with self.http.request(method, f"{self.pipeline.redirector_url}/{link.code}", headers=headers,
                                     allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    async def first_click(self, link: Link, kind: str, country: str | None = None) -> None:
        """Click until the redirector knows the link (a 404 click is an orphan: no workspace, not counted)."""
        deadline = time.monotonic() + WAIT_S
        while not 300 <= await self.click(link, kind, country) < 400:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the redirector did not learn {link.code} within {WAIT_S:g} s")
            await asyncio.sleep(0.02)

    async def burst(self, link: Link, kind: str, n: int, country: str | None = None) -> None:
        """``n`` clicks at once."""
        statuses = await asyncio.gather(*(self.click(link, kind, country) for _ in range(n)))
        if any(not 300 <= s < 400 for s in statuses):
            raise RuntimeError(f"clicks on {link.code} answered {statuses}")

    def delay(self, event: dict[str, Any], at: float) -> float:
        """Milliseconds from the event's trigger (created_at) to its arrival at the receiver."""
        return at * 1000 - _created_ms(event)

    async def warm_up(self, attempts: int = 3) -> None:
        """A milestone end to end: connections made, partitions assigned, thresholds and subscriptions known."""
        for attempt in range(attempts):
            try:
                await self.milestone(timeout_s=15)
                return
            except TimeoutError:
                if attempt == attempts - 1:
                    raise

    # ---- the patterns --------------------------------------------------------------------------

    async def milestone(self, timeout_s: float = WAIT_S) -> float:
        """Human clicks on a fresh link, a few more than MILESTONE; the MILESTONE-th human one reaches it."""
        link = await self.link("ms")
        await self.first_click(link, "human", "DE")
        await self.burst(link, "human", MILESTONE - 1 + EXTRA, "DE")
        return self.delay(*await self.arrivals.wait("milestone.reached", link.id, timeout_s))

    async def spikes(self, reps: int) -> list[float]:
        """Per link: one click, two windows of quiet (the link needs history), then a burst from FR."""
        links = [await self.link("sp") for _ in range(reps)]
        for link in links:
            await self.first_click(link, "human", "DE")
        # Event time, not a poll: the baseline needs two spike windows since the link's first click.
        await asyncio.sleep(2 * THRESHOLDS["spikes"]["window_s"] + 0.2)
        delays = []
        for link in links:
            await self.burst(link, "human", THRESHOLDS["spikes"]["min_count"] + EXTRA, "FR")
            delays.append(self.delay(*await self.arrivals.wait("traffic.spike", link.id)))
        return delays

    async def suspicious(self) -> float:
        """A burst of crawler clicks on a fresh link; the min_count-th bot click makes it suspicious."""
        link = await self.link("su")
        await self.first_click(link, "crawler")
        await self.burst(link, "crawler", THRESHOLDS["suspicious"]["min_count"] - 1 + EXTRA)
        return self.delay(*await self.arrivals.wait("traffic.suspicious", link.id))

    async def failing(self) -> tuple[float, float]:
        """A destination passes a check, then answers 503: (check -> webhook, failure onset -> webhook) ms."""
        path = f"/d/{uuid.uuid4().hex[:8]}"
        link = await self.link("df", path)
        await self.site.wait_hits(path, 1)
        self.site.status[path] = 503
        onset = time.time()
        fail_after = THRESHOLDS["destinations"]["fail_after"]
        event, at = await self.arrivals.wait("link.destination_failing", link.id,
                                             WAIT_S + fail_after * CHECK_INTERVAL_S)
        return self.delay(event, at), (at - onset) * 1000

    async def blocked(self) -> tuple[float, float]:
        """A link made through the API, then its host blocklisted: (version -> webhook, file write -> webhook) ms."""
        host = f"blk-{uuid.uuid4().hex[:10]}.example.net"
        r = await self.api.post("/v1/links", json={"destination": f"https://{host}/"})
        r.raise_for_status()
        link_id = r.json()["id"]
        with self.blocklist.open("a") as f:
            f.write(f"{host}  # bench/derived.py\n")
        written = time.time()
        event, at = await self.arrivals.wait("link.blocked", link_id)
        return self.delay(event, at), (at - written) * 1000


async def _status(response: Awaitable[httpx.Response], expected: int) -> bool:
    return (await response).status_code == expected


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _summary(samples: list[float]) -> dict[str, Any]:
    return {"p50_ms": round(statistics.median(samples), 1), "min_ms": round(min(samples), 1),
            "max_ms": round(max(samples), 1), "samples_ms": [round(s, 1) for s in samples]}


async def _measure(reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    site = Site()
    # Before the pipeline picks its ports: a port-0 bind after that could take one of them.
    await site.start()
    try:
        with tempfile.TemporaryDirectory(prefix="clickwire-derived-") as tmp:
            return await _measure_in(Path(tmp), site, reps, say)
    finally:
        await site.stop()


async def _measure_in(root: Path, site: Site, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    (root / "blocklist.txt").write_text(DEFAULT_BLOCKLIST_PATH.read_text())
    pipeline = Pipeline(root, say=say, extra_env={
        "CLICKWIRE_PATTERNS_CHECK_INTERVAL": str(CHECK_INTERVAL_S),
        "CLICKWIRE_API_BLOCKLIST": str(root / "blocklist.txt"),
        "CLICKWIRE_API_BLOCKLIST_POLL": str(BLOCKLIST_POLL_S),
    })
    arrivals = Arrivals()
    pipeline.receiver = Receiver([], on_event=arrivals.on_event)
    pool = await asyncio.to_thread(AddressPool, random.Random(5))
    bench = Bench(pipeline, arrivals, site, pool)
    try:
        # Pipeline.start without its demo world: this benchmark makes its own.
        fetch_jars(pipeline.stack, say)
        await start_broker(pipeline.stack)
        await ensure_topics(pipeline.stack.common)
        await orchestrate.up(pipeline.home, pipeline.env, pipeline.services, progress=say)
        await pipeline.receiver_up()
        await bench.setup()
        await bench.warm_up()
        say("warm-up milestone arrived")
        out: dict[str, Any] = {}
        out["milestone.reached"] = _summary([await bench.milestone() for _ in range(reps)])
        out["traffic.spike"] = _summary(await bench.spikes(reps))
        out["traffic.suspicious"] = _summary([await bench.suspicious() for _ in range(reps)])
        failing = [await bench.failing() for _ in range(reps)]
        out["link.destination_failing"] = _summary([raw for raw, _ in failing]) | {
            "from_failure_onset": _summary([onset for _, onset in failing]),
            "bound_ms": THRESHOLDS["destinations"]["fail_after"] * CHECK_INTERVAL_S * 1000}
        blocked = [await bench.blocked() for _ in range(reps)]
        out["link.blocked"] = _summary([raw for raw, _ in blocked]) | {
            "from_blocklist_write": _summary([write for _, write in blocked])}
        out["settings"] = {"reps": reps, "thresholds": THRESHOLDS, "check_interval_s": CHECK_INTERVAL_S,
                           "api_blocklist_poll_s": BLOCKLIST_POLL_S, "subscriptions": "one per type, single mode"}
        return out
    finally:
        await bench.close()
        await pipeline.stop()


def run(report: dict[str, Any], reps: int = 5) -> None:
    """Measure trigger -> webhook received for each derived event type (report["derived"])."""
    report["derived"] = asyncio.run(_measure(reps, lambda m: print(m, flush=True)))


def main() -> None:
    """Print the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    run(out, args.reps)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
