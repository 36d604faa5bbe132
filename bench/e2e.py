"""End-to-end benchmark: click -> webhook received, through redirector, enricher, router and deliverer.

A whole pipeline of its own (clickwire.pipeline: own broker, every service as a process, a
receiver verifying signatures) takes ``rate`` clicks/s for ``duration`` seconds from the simulator,
which runs in a process of its own (the receiver's loop only receives webhooks, as a customer's would);
the latency of each click is receipt time minus the click's ``ts_ms`` (stamped by the redirector
when it answered). Targets (docs/performance.md): p50 <= 25 ms, p99 <= 100 ms at 1,000 clicks/s.

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
``python -m bench.e2e [--rate 1000] [--duration 20] [--batch-ms 1] [--batch-max 500] [--no-low]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.redirect import vegeta
from clickwire.codec import codec_for
from clickwire.liveview import consumer_lag
from clickwire.pipeline import Pipeline
from clickwire.receiver import Receiver
from clickwire.settings import CommonSettings
from clickwire.simulate import AddressPool, SimStats, Target, build_request, simulate
from clickwire.topics import Topic, name

HUMANS = {"human": 1.0}
BATCH_MAX = 500
# The services on the click -> webhook path (the API only configures it); the sink and the patterns
# service read the same clicks beside it.
PATH_SERVICES = ("api", "redirector", "enricher", "dispatcher")
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


def _vegeta_load(tool: Path, url: str, targets: list[Target], rate: float, duration_s: float) -> tuple[int, int]:
    """The same human clicks (build_request: user agents, languages, referrers, residential addresses in
    X-Forwarded-For) sent open loop by vegeta: 2,000 distinct requests, round robin. Go spends a few
    percent of a core at 1,000 clicks/s where the aiohttp simulator took 40-100% of one, on a 2-core
    machine that also runs the broker and every service."""
    rng = random.Random(7)
    pool = AddressPool(rng)
    hammer_ip, _ = pool.human(rng, "DE")
    with tempfile.TemporaryDirectory(prefix="clickwire-e2e-load-") as tmp:
        lines: list[str] = []
        for _ in range(2000):
            target = rng.choice(targets)
            method, headers = build_request("human", target, pool, rng, hammer_ip=hammer_ip)
            lines.append(f"{method} {url}/{target.code}")
            lines.extend(f"{k}: {v}" for k, v in headers.items())
            lines.append("")
        (Path(tmp) / "targets.txt").write_text("\n".join(lines) + "\n")
        results = Path(tmp) / "results.bin"
        subprocess.run([str(tool), "attack", f"-targets={tmp}/targets.txt", f"-rate={int(rate)}/s",
                        f"-duration={duration_s}s", "-redirects=-1", "-workers=16", "-max-workers=256",
                        f"-output={results}"], check=True, capture_output=True)
        report = json.loads(subprocess.run([str(tool), "report", "-type=json", str(results)], check=True,
                                           capture_output=True, text=True).stdout)
    codes = {int(k): v for k, v in (report.get("status_codes") or {}).items()}
    return int(report["requests"]), sum(n for code, n in codes.items() if 300 <= code < 400)


async def _load_in_process(url: str, targets: list[Target], rate: float, duration_s: float) -> tuple[int, int]:
    tool, _ = vegeta()
    if tool is not None:
        return await asyncio.get_running_loop().run_in_executor(
            None, _vegeta_load, tool, url, targets, rate, duration_s)
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
            tps = [TopicPartition(physical, p) for p in sorted(consumer.partitions_for_topic(physical)
                                                               or await _partitions(consumer, physical))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
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


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    metadata = await consumer._client.fetch_all_metadata()  # a consumer without subscription has none yet
    return set(metadata.partitions_for_topic(topic) or ())


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


async def _measure(rate: float, duration_s: float, batch_ms: int, batch_max: int, warmup_s: float = 30.0,
                   path_only: bool = False) -> dict[str, Any]:
    # event id -> receipt time (ms), and click id -> ts_ms, for the clicks of the measured window only.
    received: dict[str, float] = {}
    clicks: dict[str, int] = {}
    measuring = False

    def on_event(event: dict[str, Any], _latency_ms: float) -> None:
        if measuring:
            received[str(event.get("id"))] = time.time() * 1000
            click = (event.get("data") or {}).get("click") or {}
            if isinstance(click.get("click_id"), str):
                clicks[click["click_id"]] = int(click["ts_ms"])

    with tempfile.TemporaryDirectory(prefix="clickwire-e2e-") as tmp:
        pipeline = Pipeline(Path(tmp))
        if path_only:
            pipeline.services = [s for s in pipeline.services if s.name in PATH_SERVICES]
        pipeline.receiver = Receiver([], on_event=on_event)
        await pipeline.start()
        lags: dict[str, int] = {}
        try:
            assert pipeline.world is not None
            subscription = await _configure(pipeline, batch_ms, batch_max)
            # Warm up at the measured rate (connections, caches, consumer assignments, and the broker's JIT:
            # a fresh JVM spends its first minute compiling, at up to a core), then measure a clean window.
            _, warm = await _load_in_process(pipeline.redirector_url, list(pipeline.world.targets), rate, warmup_s)
            deadline = time.monotonic() + 60
            while pipeline.receiver.stats.accepted < warm and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            pipeline.receiver.stats.latencies_ms.clear()
            before = pipeline.receiver.stats.accepted
            since_ms = int(time.time() * 1000)
            measuring = True
            load = os.getloadavg()[0]

            async def sample_lag() -> None:
                while True:
                    with contextlib.suppress(Exception):
                        for group, lag in (await consumer_lag(pipeline.stack.common)).items():
                            lags[group] = max(lags.get(group, 0), lag or 0)
                    await asyncio.sleep(2)

            sampler = asyncio.create_task(sample_lag())
            try:
                sent, redirected = await _load_in_process(pipeline.redirector_url, list(pipeline.world.targets),
                                                          rate, duration_s)
                deadline = time.monotonic() + 60
                while (pipeline.receiver.stats.accepted - before < redirected
                       and time.monotonic() < deadline):
                    await asyncio.sleep(0.2)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            measuring = False
            latencies = sorted(pipeline.receiver.stats.latencies_ms)
            stamps = await _read_timestamps(pipeline.stack.common, since_ms)
        finally:
            await pipeline.stop()
    if not latencies:
        raise RuntimeError("no webhook arrived")

    return {"rate": int(rate), "duration_s": duration_s, "sent": sent, "redirected": redirected,
            "delivered": len(latencies), "p50_ms": _pct(latencies, 0.50), "p99_ms": _pct(latencies, 0.99),
            "max_ms": round(latencies[-1], 1), "achieved_rate": round(redirected / duration_s),
            "subscription": subscription, "load_avg_before": load,
            "stages": _stages(clicks, received, stamps), "max_lag": lags,
            "targets": {"p50_ms": 25, "p99_ms": 100}}


def run(report: dict[str, Any], rate: float = 1000.0, duration_s: float = 20.0, batch_ms: int = 1,
        low: bool = True, batch_max: int = BATCH_MAX, warmup_s: float = 30.0) -> None:
    """Measure click -> webhook latency at the target rate (report["e2e"]) and at 200/s (report["e2e_low"])."""
    report["e2e"] = asyncio.run(_measure(rate, duration_s, batch_ms, batch_max, warmup_s))
    if low:
        # Where the whole pipeline is not saturated on this machine: latency without a backlog.
        report["e2e_low"] = asyncio.run(_measure(200.0, duration_s, batch_ms, batch_max, warmup_s))


def main() -> None:
    """Print the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--batch-ms", type=int, default=1)
    parser.add_argument("--batch-max", type=int, default=BATCH_MAX)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of traffic before measuring")
    parser.add_argument("--no-low", action="store_true", help="skip the 200 clicks/s run")
    parser.add_argument("--path-only", action="store_true", help="run only " + ", ".join(PATH_SERVICES))
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.path_only:
        out["e2e"] = asyncio.run(_measure(args.rate, args.duration, args.batch_ms, args.batch_max, args.warmup,
                                          path_only=True))
    else:
        run(out, args.rate, args.duration, args.batch_ms, not args.no_low, args.batch_max, args.warmup)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
