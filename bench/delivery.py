"""Deliveries/s from one deliverer to a local receiver, against a bare aiohttp keep-alive POST loop.

Usage: python -m bench.delivery [--deliveries 30000] [--subscriptions 64]

Both sides hit the same receiver (a raw asyncio HTTP/1.1 server answering 204, in its own process,
from bench.delivery_transport) in the same run. The deliverer reads pre-produced outbox records from
the real broker (CLICKWIRE_KAFKA_BOOTSTRAP), signs each body, POSTs it through VettedTransport and
writes an attempt record per delivery; it is timed from its first delivery to its last, so consumer
group start-up is not counted. The bare loop runs as many concurrent workers as there are
subscriptions, since the deliverer keeps one request in flight per subscription.
Both run on the event loop the service runs on (uvloop, as clickwire.service does; ``--loop asyncio``
for the standard one). Besides the rates the report gives each side's CPU time per request, a
figure that moves much less than the rates when other work shares the machine.
Targets (docs/performance.md): >= 5,000 deliveries/s and >= 0.5 of the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
import uuid
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp

from bench.delivery_transport import BODY, _serve
from clickwire.codec import codec_for
from clickwire.kafka import admin_client, ensure_topics, make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.dispatcher.cli import serve
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.signing import new_secret

_T = TypeVar("_T")
TOPICS = (Topic.WEBHOOK_SUBSCRIPTIONS, Topic.WEBHOOK_OUTBOX, Topic.WEBHOOK_RETRY, Topic.WEBHOOK_ATTEMPTS,
          Topic.WEBHOOK_DEAD, Topic.DEAD_LETTERS)


async def bare_loop(url: str, total: int, concurrency: int) -> tuple[float, float]:
    """Requests/s of ``concurrency`` aiohttp workers POSTing the same body over keep-alive connections,
    and this process's CPU microseconds per request."""
    headers = {"content-type": "application/json", "webhook-id": "evt_0"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 204:
                        raise RuntimeError(f"receiver answered {resp.status}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm-up: connections open
        remaining = total
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started), (time.process_time() - cpu) / total * 1e6


def _subscription(sub_id: str, url: str) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": sub_id, "workspace_id": "bench", "url": url, "description": "", "event_types": ["click"],
        "filters": {"link_ids": [], "domains": [], "tags": [], "campaigns": [], "countries": [],
                    "device_types": [], "referrer_classes": [], "include_bots": False, "bot_kinds": [],
                    "min_trust": None},
        "mode": "single", "batch_max": 100, "batch_ms": 1000, "enabled": True, "disabled_reason": None,
        "secrets": [{"secret": new_secret(), "expires_ms": None}], "created_ms": now, "updated_ms": now,
    }


async def deliverer_rate(common: CommonSettings, url: str, total: int, subscriptions: int) -> dict[str, float]:
    """Deliveries/s of one in-process deliverer draining ``total`` pre-produced outbox records."""
    await ensure_topics(common, TOPICS)
    producer = make_producer(common)
    await producer.start()
    try:
        sub_ids = [f"sub_{i:04d}" for i in range(subscriptions)]
        subs_codec, outbox_codec = codec_for(Topic.WEBHOOK_SUBSCRIPTIONS), codec_for(Topic.WEBHOOK_OUTBOX)
        for sub_id in sub_ids:
            await producer.send(name(Topic.WEBHOOK_SUBSCRIPTIONS, common.topic_prefix),
                                subs_codec.encode(_subscription(sub_id, url)), key=sub_id.encode())
        outbox = name(Topic.WEBHOOK_OUTBOX, common.topic_prefix)
        now = int(time.time() * 1000)
        for i in range(total):
            sub_id = sub_ids[i % subscriptions]
            record = {"event_id": f"evt_{i}", "subscription_id": sub_id, "event_type": "click",
                      "created_ms": now, "body": BODY, "attempt": 0, "not_before_ms": 0}
            await producer.send(outbox, outbox_codec.encode(record), key=sub_id.encode())
        await producer.flush()
    finally:
        await producer.stop()

    settings = DispatcherSettings.from_env({
        "CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap, "CLICKWIRE_TOPIC_PREFIX": common.topic_prefix,
        "CLICKWIRE_HOME": str(common.home), "CLICKWIRE_METRICS_PORT": "0",
        "CLICKWIRE_WEBHOOK_ALLOW_NETS": "127.0.0.0/8", "CLICKWIRE_LOG_LEVEL": "warning",
    })
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def ready(p: int) -> None:
        port.set_result(p)

    task = asyncio.create_task(serve(settings, "deliverer", stop, ready))
    try:
        health_url = f"http://127.0.0.1:{await port}/health"
        first: tuple[float, float, int] | None = None
        deadline = time.monotonic() + 120
        # The poll runs in the deliverer's process: aiohttp and 50 ms keep its share of the CPU small.
        async with aiohttp.ClientSession() as client:
            while True:
                async with client.get(health_url) as resp:
                    delivered = int((await resp.json())["deliverer"]["delivered"])
                now_s, cpu_s = time.perf_counter(), time.process_time()
                if first is None and delivered > 0:
                    first = (now_s, cpu_s, delivered)
                if delivered >= total:
                    break
                if time.monotonic() > deadline or task.done():
                    raise RuntimeError(f"deliverer stalled at {delivered}/{total}")
                await asyncio.sleep(0.05)
        assert first is not None
        rate = (total - first[2]) / max(1e-9, now_s - first[0])
        cpu_us = (cpu_s - first[1]) / max(1, total - first[2]) * 1e6
        return {"deliveries_per_s": rate, "cpu_us_per_delivery": cpu_us, "delivered": float(total)}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        async with admin_client(common) as admin:
            await admin.delete_topics([name(t, common.topic_prefix) for t in TOPICS])


def _run_loop(main: Coroutine[Any, Any, _T], loop: str) -> _T:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def run(report: dict[str, Any], deliveries: int = 30_000, subscriptions: int = 64, loop: str = "uvloop") -> None:
    """Measure both sides against one receiver and store the numbers under ``report["delivery"]``."""
    load = os.getloadavg()[0]
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{parent.recv()}/hook"
        common = replace(CommonSettings.from_env(), topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
                         home=CommonSettings.from_env().home)

        async def both() -> tuple[tuple[float, float], dict[str, float]]:
            baseline = await bare_loop(url, 20_000, subscriptions)
            measured = await deliverer_rate(common, url, deliveries, subscriptions)
            return baseline, measured

        (baseline, bare_cpu_us), measured = _run_loop(both(), loop)
    finally:
        server.terminate()
        server.join()
    rate = measured["deliveries_per_s"]
    report["delivery"] = {
        "deliveries_per_s": round(rate),
        "bare_aiohttp_per_s": round(baseline),
        "ratio": round(rate / baseline, 3),
        "cpu_us_per_delivery": round(measured["cpu_us_per_delivery"], 1),
        "bare_cpu_us_per_request": round(bare_cpu_us, 1),
        "loop": loop,
        "load_avg_before": load,
        "subscriptions": subscriptions,
        "deliveries": deliveries,
        "body_bytes": len(BODY),
        "targets": {"deliveries_per_s": 5000, "ratio": 0.5},
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    """Print the measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=30_000)
    parser.add_argument("--subscriptions", type=int, default=64)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    run(report, args.deliveries, args.subscriptions, args.loop)
    d = report["delivery"]
    print(f"deliverer      {d['deliveries_per_s']:>8,} deliveries/s ({d['subscriptions']} subscriptions), "
          f"{d['cpu_us_per_delivery']} us CPU each")
    print(f"bare aiohttp   {d['bare_aiohttp_per_s']:>8,} requests/s ({d['subscriptions']} concurrent), "
          f"{d['bare_cpu_us_per_request']} us CPU each")
    print(f"ratio          {d['ratio']:>8.2f}   (targets: >= 5,000/s and >= 0.5; {d['loop']}, "
          f"load average {d['load_avg_before']:.1f})")


if __name__ == "__main__":
    main()
