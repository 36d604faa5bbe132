"""Enricher throughput against a bare aiokafka consume->produce loop, and added latency at 1,000 clicks/s.

One run, one broker (CLICKWIRE_KAFKA_BOOTSTRAP), topics under a fresh prefix deleted at the end:

a. bare loop: an aiokafka consumer copies N raw clicks (bytes, no decode) to another topic;
b. the enricher (`clickwire enricher` subprocess) processes the same N clicks; throughput is counted
   on the output topic's end offsets from the first enriched record to the N-th;
c. with the enricher caught up, clicks are produced at 1,000/s for 4 s (a warm-up, other clicks),
   then 8 s; latency is the time from produce to the enriched record being read by a consumer here. The same is measured
   first through a bare consume->produce copy (before the enricher starts): the floor of that
   path on this broker, so `added_p99_ms` (the enricher's p99) can be read against it.

Clicks use the external browser/crawler UA corpora of the enricher's tests (weighted by real share,
~5% bots), 2,000 client IPs and 500 links, so most user agents repeat as they do in real traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from clickwire.codec import codec_for
from clickwire.kafka import ensure_topics, make_consumer, make_producer
from clickwire.settings import REPO_ROOT, CommonSettings
from clickwire.topics import Topic, name, spec

# Before each measured 8 s at 1,000/s, 4 s at the same rate with other clicks (another seed: other
# client IPs, so the measured clicks still bring addresses the caches have never seen). The first
# seconds at a steady rate after the throughput burst carry the switch from full batches to single
# clicks (p99 29 ms in the first window, 10-11 ms in the next two, same run); both sides warm up alike.
WARMUP_S = 4
WARMUP_SEED = 12
CORPUS = REPO_ROOT / "tests" / "unit" / "enricher" / "data"
TOPICS = (Topic.CLICKS_RAW, Topic.CLICKS_ENRICHED, Topic.LINKS, Topic.LINK_STATS, Topic.DEAD_LETTERS)


def _clicks(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = [json.loads(line) for line in (CORPUS / "browser_user_agents_sample.jsonl").read_text().splitlines()]
    bots = [line for line in (CORPUS / "crawler_user_agents_sample.txt").read_text().splitlines() if line]
    uas, weights = [r["ua"] for r in rows], [r["percent"] for r in rows]
    ips = [f"{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
           for _ in range(2000)]
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        ua = rnd.choice(bots) if rnd.random() < 0.05 else rnd.choices(uas, weights)[0]
        link = rnd.randrange(500)
        out.append({
            "click_id": str(uuid.uuid4()), "ts_ms": now + i, "link_id": f"lnk_{link}", "workspace_id": "ws",
            "domain": "sho.rt", "code": f"c{link}", "method": "GET", "client_ip": rnd.choice(ips),
            "user_agent": ua, "referer": rnd.choice([None, "https://www.google.com/", "https://t.co/x"]),
            "accept_language": "en-US", "purpose": None, "ch_ua": None, "ch_ua_mobile": None,
            "ch_ua_platform": None, "query": "", "qr": False, "status": 302,
            "destination": "https://example.com/", "redirector_id": "bench",
        })
    return out


async def _produce(common: CommonSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(common)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _bare_loop(common: CommonSettings, src: str, dst: str, n: int) -> float:
    """Copy n records src -> dst with aiokafka; return records/s from the first record fetched."""
    consumer = make_consumer(common, src, group_id=f"bench-bare-{uuid.uuid4().hex[:6]}", fetch_max_wait_ms=5)
    producer = make_producer(common)
    await consumer.start()
    await producer.start()
    try:
        copied, started = 0, 0.0
        while copied < n:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            if batches and not started:
                started = time.perf_counter()
            futures = [await producer.send(dst, m.value, key=m.key) for msgs in batches.values() for m in msgs]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
            copied += len(futures)
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def _end_total(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    return sum((await consumer.end_offsets(tps)).values())


async def _enricher_rate(common: CommonSettings, n: int, timeout_s: float) -> float:
    """Wait for n records on clicks.enriched; return records/s from the first one to the n-th."""
    topic = name(Topic.CLICKS_ENRICHED, common.topic_prefix)
    tps = [TopicPartition(topic, p) for p in range(spec(Topic.CLICKS_ENRICHED).partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        first_t, first_n = 0.0, 0
        while True:
            total = await _end_total(consumer, tps)
            now = time.perf_counter()
            if total and not first_t:
                first_t, first_n = now, total
            if total >= n:
                return (total - first_n) / max(1e-9, now - first_t)
            if time.monotonic() > deadline:
                raise TimeoutError(f"enricher produced {total}/{n} records in {timeout_s} s")
            await asyncio.sleep(0.02)  # polling interval of the end offsets, not a wait for an event
    finally:
        await consumer.stop()


async def _bare_copy(common: CommonSettings, src: str, dst: str, ready: asyncio.Event) -> None:
    """Copy src -> dst from its current end (`ready` set once there) as records come, until cancelled."""
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap, fetch_max_wait_ms=5, group_id=None,
                                enable_auto_commit=False)
    producer = make_producer(common, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([TopicPartition(src, p) for p in range(spec(Topic.CLICKS_RAW).partitions)])
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolves the seek now, so later records are all copied
        ready.set()
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            futures = [await producer.send(dst, m.value, key=m.key) for msgs in batches.values() for m in msgs]
            if futures:
                await asyncio.gather(*futures)
    finally:
        await consumer.stop()
        await producer.stop()


async def _latency(common: CommonSettings, rate: int, seconds: float, out_topic: str | None = None,
                   topic: Topic = Topic.CLICKS_ENRICHED, seed: int = 11) -> dict[str, float]:
    """Produce `rate` clicks/s for `seconds`; return produce -> visible-on-`out_topic` latency
    percentiles (ms); clicks.enriched by default, records decoded with `topic`'s codec."""
    enriched = codec_for(topic)
    raw_codec = codec_for(Topic.CLICKS_RAW)
    out_topic = out_topic or name(Topic.CLICKS_ENRICHED, common.topic_prefix)
    consumer = AIOKafkaConsumer(out_topic, bootstrap_servers=common.bootstrap, auto_offset_reset="latest",
                                fetch_max_wait_ms=5, group_id=None)
    await consumer.start()
    await consumer.seek_to_end()
    producer = make_producer(common, linger_ms=0)
    await producer.start()
    clicks = _clicks(int(rate * seconds), seed=seed)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    async def read() -> None:
        while len(latencies) < len(clicks):
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for msgs in batches.values():
                for m in msgs:
                    cid = enriched.decode(m.value)["click_id"]
                    if cid in sent_at:
                        latencies.append((now - sent_at.pop(cid)) * 1000)

    reader = asyncio.create_task(read())
    try:
        start, tick = time.perf_counter(), 0.01
        per_tick = max(1, int(rate * tick))
        for i in range(0, len(clicks), per_tick):
            target = start + (i // per_tick) * tick
            await asyncio.sleep(max(0.0, target - time.perf_counter()))  # pacing the offered load
            for c in clicks[i:i + per_tick]:
                c["ts_ms"] = int(time.time() * 1000)
                sent_at[c["click_id"]] = time.perf_counter()
                await producer.send(raw_codec_topic(common), raw_codec.encode(c), key=c["link_id"].encode())
        await asyncio.wait_for(reader, timeout=60)
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(latencies[-1], 1), "clicks": len(latencies)}


def _start_enricher(env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    with open(home / "enricher.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-c", "from clickwire.cli import main; main()", "enricher"],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def raw_codec_topic(common: CommonSettings) -> str:
    """The raw clicks topic under the bench prefix."""
    return name(Topic.CLICKS_RAW, common.topic_prefix)


async def _run(report: dict[str, Any], n: int) -> None:
    base = CommonSettings.from_env()
    common = replace(base, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    await ensure_topics(common, TOPICS)
    copy_topic = common.topic_prefix + "bare.copy"
    admin = AIOKafkaAdminClient(bootstrap_servers=common.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(copy_topic, spec(Topic.CLICKS_RAW).partitions, 1)])
    raw_codec = codec_for(Topic.CLICKS_RAW)
    records = [(c["link_id"].encode(), raw_codec.encode(c)) for c in _clicks(n)]
    await _produce(common, raw_codec_topic(common), records)
    proc: subprocess.Popen[bytes] | None = None
    home = Path(tempfile.mkdtemp(prefix="bench-enricher-"))
    try:
        load_before = [round(x, 2) for x in os.getloadavg()]
        bare = await _bare_loop(common, raw_codec_topic(common), copy_topic, n)
        ready = asyncio.Event()
        copier = asyncio.create_task(_bare_copy(common, raw_codec_topic(common), copy_topic, ready))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            await _latency(common, rate=1000, seconds=WARMUP_S, out_topic=copy_topic, topic=Topic.CLICKS_RAW,
                           seed=WARMUP_SEED)
            bare_latency = await _latency(common, rate=1000, seconds=8, out_topic=copy_topic,
                                          topic=Topic.CLICKS_RAW)
        finally:
            copier.cancel()
            await asyncio.gather(copier, return_exceptions=True)
        env = {**os.environ, "CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap, "CLICKWIRE_TOPIC_PREFIX":
               common.topic_prefix, "CLICKWIRE_HOME": str(home), "CLICKWIRE_METRICS_PORT": "0",
               "CLICKWIRE_LOG_LEVEL": "warning"}
        proc = _start_enricher(env, home)
        enricher = await _enricher_rate(common, n, timeout_s=600)
        warmup = await _latency(common, rate=1000, seconds=WARMUP_S, seed=WARMUP_SEED)
        latency = await _latency(common, rate=1000, seconds=8)
        report["enricher"] = {
            "clicks": n, "bare_per_s": round(bare), "enricher_per_s": round(enricher),
            "ratio": round(enricher / bare, 3), "added_p99_ms": latency["p99_ms"],
            "latency_at_1000_per_s": latency, "bare_latency_at_1000_per_s": bare_latency,
            "warmup_latency_at_1000_per_s": warmup,
            "load_before": load_before,
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        names = [name(t, common.topic_prefix) for t in TOPICS] + [copy_topic]
        existing = [t for t in await admin.list_topics() if t.startswith(common.topic_prefix)]
        await admin.delete_topics(sorted(set(names) | set(existing)))
        await admin.close()


def run(report: dict[str, Any]) -> None:
    """Run the enricher benchmark and put its numbers under report['enricher']."""
    asyncio.run(_run(report, int(os.environ.get("BENCH_ENRICHER_CLICKS", "100000"))))


if __name__ == "__main__":
    result: dict[str, Any] = {}
    run(result)
    print(json.dumps(result, indent=2))
