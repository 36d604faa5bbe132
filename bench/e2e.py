"""End-to-end benchmark: click -> webhook received, through redirector, enricher, router and deliverer.

A whole pipeline of its own (clickwire.pipeline: own broker, every service as a process, a
receiver verifying signatures) takes ``warmup`` seconds (90) of clicks at ``rate``, then is measured
in windows of ``duration`` seconds: every service at ``rate`` (``e2e``), every service at 200/s
(``e2e_low``), and at ``rate`` again with the sink and the patterns service stopped (``e2e_path``:
only the redirector, enricher and dispatcher, and the API, on the path). The clicks are the
simulator's human clicks, sent by wrk (see _wrk_load; the aiohttp simulator in a process of its own
when wrk is missing); the latency of each click is receipt time minus the click's ``ts_ms`` (stamped
by the redirector when it answered). Targets (docs/performance.md): p50 <= 25 ms, p99 <= 100 ms at
1,000 clicks/s.

Where the time goes: after the run the benchmark reads back, for every measured click, the
timestamp each producer gave its record (clicks.raw by the redirector, clicks.enriched by the
enricher, webhooks.outbox by the router; same machine, same clock) and joins them with the receipt
time, so each hop's share is reported (``stages``), next to the highest committed-offset lag seen
per consumer group during the window (``max_lag``).

The subscription: the pipeline's one subscription to every click, in batch mode (one request in
flight per subscription is what keeps its order, so one subscription at 1,000 events/s needs
batches), with ``batch_ms`` 1 -- a batch is whatever queued while the previous request was in
flight, without waiting for more -- and ``batch_max`` 500: with 50 (the demo's) one subscription
is capped at 50 events per round trip, and under CPU contention the receiver's round trip passes
50 ms, the backlog grows without bound and the lane parks. ``--batch-ms 20 --batch-max 50`` is
the demo's setting. Standalone:
``python -m bench.e2e [--rate 1000] [--duration 20] [--warmup 90] [--batch-ms 1] [--batch-max 500] [--no-low]
[--no-path] [--split]`` (``--split``: the dispatcher's router and deliverer as two processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer

from clickwire import orchestrate, procs
from clickwire.codec import codec_for
from clickwire.kafka import topic_partitions
from clickwire.liveview import consumer_lag
from clickwire.orchestrate import ServiceSpec
from clickwire.pipeline import Pipeline, free_port
from clickwire.receiver import Receiver
from clickwire.settings import CommonSettings
from clickwire.simulate import AddressPool, SimStats, Target, build_request, simulate
from clickwire.topics import Topic, name

HUMANS = {"human": 1.0}
BATCH_MAX = 500
# The services that read the same clicks beside the click -> webhook path (redirector, enricher,
# dispatcher; the API only configures it): stopped for the last window.
BESIDE_PATH = ("sink", "patterns")
WARMUP_S = 90.0
STAGES = ("redirector publish", "raw -> enriched", "enriched -> outbox", "outbox -> received", "total")


def _load(url: str, targets: list[Target], rate: float, duration_s: float, out: Any) -> None:
    """The measured traffic, in a process of its own: the receiver's loop then only receives webhooks
    (a customer's endpoint does not share a process with the clicking browsers)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    stats = asyncio.run(simulate(url, targets, rate=rate, duration_s=duration_s, mix=HUMANS, stats=SimStats(),
                                 concurrency=128))
    out.send((stats.sent, stats.redirected, stats.server_errors))


def _human_requests(targets: list[Target], n: int = 2000) -> list[tuple[str, str, dict[str, str]]]:
    """n human clicks as (method, path, headers): the simulator's user agents, languages, referrers and
    residential addresses (X-Forwarded-For; the pipeline's redirector trusts 127.0.0.1 as a proxy)."""
    rng = random.Random(7)
    pool = AddressPool(rng)
    hammer_ip, _ = pool.human(rng, "DE")
    found = []
    for _ in range(n):
        target = rng.choice(targets)
        method, headers = build_request("human", target, pool, rng, hammer_ip=hammer_ip)
        found.append((method, f"/{target.code}", headers))
    return found


def _wrk_load(url: str, targets: list[Target], rate: float, duration_s: float) -> tuple[int, int]:
    """Send the human clicks with wrk, paced: ``rate / 20`` connections, each waiting
    ``connections / rate`` (less 2 ms for the answer) between requests. wrk is C and used
    about 5% of a core here at 1,000 requests/s; vegeta (open loop, Go) took 30-40% and the aiohttp
    simulator 40-100%, on a 2-core machine that also runs the broker and every service. The pacing is
    per connection, so a slow redirector lowers the rate: ``achieved_rate`` in the report says what ran."""
    connections = max(1, math.ceil(rate / 20))
    delay_ms = max(0, math.floor(connections * 1000 / rate) - 2)
    lua = ["local specs = {"]
    for method, path, headers in _human_requests(targets):
        fields = ", ".join(f"[ [==[{k}]==] ] = [==[{v}]==]" for k, v in headers.items())
        lua.append(f"  {{ [==[{method}]==], [==[{path}]==], {{ {fields} }} }},")
    lua += ["}", "local reqs, i = {}, 0",
            "function init(args) for k, s in ipairs(specs) do reqs[k] = wrk.format(s[1], s[2], s[3]) end end",
            "function request() i = i % #reqs + 1; return reqs[i] end",
            f"function delay() return {delay_ms} end"]
    with tempfile.TemporaryDirectory(prefix="clickwire-e2e-load-") as tmp:
        script = Path(tmp) / "clicks.lua"
        script.write_text("\n".join(lua) + "\n")
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(duration_s)}s", "-s", str(script), url],
                             capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return requests, requests - (int(errors.group(1)) if errors else 0)


async def _load_in_process(url: str, targets: list[Target], rate: float, duration_s: float) -> tuple[int, int]:
    if shutil.which("wrk"):
        return await asyncio.get_running_loop().run_in_executor(None, _wrk_load, url, targets, rate, duration_s)
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_load, args=(url, targets, rate, duration_s, send), daemon=True)
    process.start()
    try:
        sent, redirected, _ = await asyncio.get_running_loop().run_in_executor(None, receive.recv)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, process.join, 30)
    return sent, redirected


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


async def _configure(pipeline: Pipeline, batch_ms: int, batch_max: int) -> dict[str, Any]:
    """Set the subscription's delivery mode through the API; return what it now says."""
    assert pipeline.world is not None
    world = pipeline.world
    sub_id = world.subscriptions["all"]
    change = {"mode": "batch", "batch_max": batch_max, "batch_ms": batch_ms}
    async with (aiohttp.ClientSession(headers={"Authorization": f"Bearer {world.token}"}) as session,
                session.patch(f"{world.api_url}/v1/webhooks/{sub_id}", json=change) as resp):
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"configuring the subscription failed: {resp.status} {body}")
    return {k: body[k] for k in ("mode", "batch_max", "batch_ms")}


async def _read_timestamps(common: CommonSettings, since_ms: int) -> dict[str, dict[str, int]]:
    """Per topic, click id (or event id) -> the record's producer timestamp, for records since ``since_ms``."""
    codecs = {Topic.CLICKS_RAW: codec_for(Topic.CLICKS_RAW), Topic.CLICKS_ENRICHED: codec_for(Topic.CLICKS_ENRICHED),
              Topic.WEBHOOK_OUTBOX: codec_for(Topic.WEBHOOK_OUTBOX)}
    found: dict[str, dict[str, int]] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        for topic, codec in codecs.items():
            physical = name(topic, common.topic_prefix)
            tps = await topic_partitions(consumer, physical)
            consumer.assign(tps)
            starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                found_at = starts.get(tp)
                consumer.seek(tp, found_at.offset if found_at is not None else ends[tp])
            seen = found[topic.name] = {}
            field = "event_id" if topic is Topic.WEBHOOK_OUTBOX else "click_id"
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                    for r in records:
                        if r.timestamp >= since_ms and r.value is not None:
                            seen.setdefault(str(codec.decode(r.value)[field]), r.timestamp)
    finally:
        await consumer.stop()
    return found


def _stages(clicks: dict[str, int], received: dict[str, float],
            stamps: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """p50/p99 of each hop over the clicks seen at every point, from click ts_ms to receipt."""
    raw, enriched, outbox = (stamps[t.name] for t in (Topic.CLICKS_RAW, Topic.CLICKS_ENRICHED, Topic.WEBHOOK_OUTBOX))
    parts: dict[str, list[float]] = {s: [] for s in STAGES}
    for click_id, ts_ms in clicks.items():
        event_id = "evt_" + uuid.UUID(click_id).hex
        at_raw, at_enriched, at_outbox = raw.get(click_id), enriched.get(click_id), outbox.get(event_id)
        at_received = received.get(event_id)
        if at_raw is None or at_enriched is None or at_outbox is None or at_received is None:
            continue
        points = (float(ts_ms), float(at_raw), float(at_enriched), float(at_outbox), at_received)
        for stage, a, b in zip(STAGES, points, points[1:], strict=False):
            parts[stage].append(b - a)
        parts["total"].append(at_received - ts_ms)
    return {s: {"p50_ms": _pct(v, 0.5), "p99_ms": _pct(v, 0.99), "n": len(v)} for s, v in parts.items() if v}


def _split(spec: ServiceSpec) -> list[ServiceSpec]:
    """The dispatcher as two processes: the router, and the deliverer on a port of its own."""
    port = free_port()
    return [replace(spec, name="router", command=("dispatcher", "--role", "router")),
            ServiceSpec("deliverer", f"http://127.0.0.1:{port}/health", {"CLICKWIRE_METRICS_PORT": str(port)},
                        command=("dispatcher", "--role", "deliverer"))]


class _Bench:
    """One pipeline, warmed up once, measured in windows: a click's latency is its webhook's receipt
    time minus its ``ts_ms``, for the clicks of the window only."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.received: dict[str, float] = {}  # event id -> receipt time (ms)
        self.clicks: dict[str, int] = {}  # click id -> ts_ms
        self.measuring = False
        pipeline.receiver = Receiver([], on_event=self._on_event)

    def _on_event(self, event: dict[str, Any], _latency_ms: float) -> None:
        if self.measuring:
            self.received[str(event.get("id"))] = time.time() * 1000
            click = (event.get("data") or {}).get("click") or {}
            if isinstance(click.get("click_id"), str):
                self.clicks[click["click_id"]] = int(click["ts_ms"])

    async def load(self, rate: float, duration_s: float) -> tuple[int, int]:
        """Send clicks, then wait (at most 60 s) until every redirected one was delivered."""
        world, receiver = self.pipeline.world, self.pipeline.receiver
        assert world is not None
        before = receiver.stats.accepted
        sent, redirected = await _load_in_process(self.pipeline.redirector_url, list(world.targets), rate,
                                                  duration_s)
        deadline = time.monotonic() + 60
        while receiver.stats.accepted - before < redirected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return sent, redirected

    async def window(self, rate: float, duration_s: float) -> dict[str, Any]:
        """Measure ``duration_s`` at ``rate``."""
        pipeline = self.pipeline
        self.received.clear()
        self.clicks.clear()
        pipeline.receiver.stats.latencies_ms.clear()
        lags: dict[str, int] = {}

        async def sample_lag() -> None:
            while True:
                with contextlib.suppress(Exception):
                    for group, lag in (await consumer_lag(pipeline.stack.common)).items():
                        lags[group] = max(lags.get(group, 0), lag or 0)
                await asyncio.sleep(2)

        since_ms = int(time.time() * 1000)
        load = os.getloadavg()[0]
        self.measuring = True
        sampler = asyncio.create_task(sample_lag())
        try:
            sent, redirected = await self.load(rate, duration_s)
        finally:
            self.measuring = False
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        latencies = sorted(pipeline.receiver.stats.latencies_ms)
        if not latencies:
            raise RuntimeError("no webhook arrived")
        stamps = await _read_timestamps(pipeline.stack.common, since_ms)
        running = [s.name for s in pipeline.services if procs.read(pipeline.home, s.name) is not None]
        return {"rate": int(rate), "duration_s": duration_s, "services": running,
                "sent": sent, "redirected": redirected,
                "delivered": len(latencies), "p50_ms": _pct(latencies, 0.50), "p99_ms": _pct(latencies, 0.99),
                "max_ms": round(latencies[-1], 1), "achieved_rate": round(redirected / duration_s),
                "load_avg_before": load, "stages": _stages(self.clicks, self.received, stamps), "max_lag": lags,
                "targets": {"p50_ms": 25, "p99_ms": 100}}


async def _measure(report: dict[str, Any], rate: float, duration_s: float, batch_ms: int, batch_max: int,
                   warmup_s: float, low: bool, path: bool = True, split: bool = False) -> None:
    """Warm one pipeline up, then fill report["e2e"] (every service at ``rate``), report["e2e_low"]
    (every service at 200/s) and report["e2e_path"] (the sink and the patterns service stopped)."""
    with tempfile.TemporaryDirectory(prefix="clickwire-e2e-") as tmp:
        pipeline = Pipeline(Path(tmp))
        if split:
            pipeline.services = [x for s in pipeline.services for x in (_split(s) if s.name == "dispatcher" else [s])]
        bench = _Bench(pipeline)
        await pipeline.start()
        try:
            report["e2e_subscription"] = await _configure(pipeline, batch_ms, batch_max)
            # The broker is a fresh JVM: for its first minute or more it compiles (one C2 thread took
            # 14.6 s of CPU in the first 75 s at 1,000 clicks/s, the broker 60-75% of a core in all, 38%
            # once warm). Production brokers run for days; so does this benchmark's, as far as it can.
            await bench.load(rate, warmup_s)
            report["e2e"] = await bench.window(rate, duration_s)
            if low:
                report["e2e_low"] = await bench.window(200.0, duration_s)
            if path:
                # The same warm broker and services, without the two readers beside the path.
                orchestrate.down(pipeline.home, [s for s in pipeline.services if s.name in BESIDE_PATH])
                await bench.load(rate, 5)
                report["e2e_path"] = await bench.window(rate, duration_s)
        finally:
            await pipeline.stop()


def run(report: dict[str, Any], rate: float = 1000.0, duration_s: float = 20.0, batch_ms: int = 1,
        low: bool = True, batch_max: int = BATCH_MAX, warmup_s: float = WARMUP_S) -> None:
    """Measure click -> webhook latency: report["e2e"], report["e2e_low"] and report["e2e_path"] (_measure)."""
    asyncio.run(_measure(report, rate, duration_s, batch_ms, batch_max, warmup_s, low))


def main() -> None:
    """Print the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--batch-ms", type=int, default=1)
    parser.add_argument("--batch-max", type=int, default=BATCH_MAX)
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds of traffic before measuring")
    parser.add_argument("--no-low", action="store_true", help="skip the 200 clicks/s run")
    parser.add_argument("--no-path", action="store_true", help="skip the window without the sink and patterns")
    parser.add_argument("--split", action="store_true", help="router and deliverer as two processes")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    asyncio.run(_measure(out, args.rate, args.duration, args.batch_ms, args.batch_max, args.warmup,
                         not args.no_low, path=not args.no_path, split=args.split))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
