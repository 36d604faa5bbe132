"""End-to-end benchmark: click -> webhook received, through redirector, enricher, router and deliverer.

A whole pipeline of its own (clickwire.pipeline: own broker, every service as a process, a
receiver verifying signatures) takes ``rate`` clicks/s for ``duration`` seconds from the simulator;
the latency of each click is receipt time minus the click's ``ts_ms`` (stamped by the redirector
when it answered). Targets (docs/performance.md): p50 <= 25 ms, p99 <= 100 ms at 1,000 clicks/s.
Standalone: ``python -m bench.e2e [--rate 1000] [--duration 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from clickwire.pipeline import Pipeline
from clickwire.simulate import SimStats, simulate

HUMANS = {"human": 1.0}


async def _measure(rate: float, duration_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clickwire-e2e-") as tmp:
        pipeline = Pipeline(Path(tmp))
        await pipeline.start()
        try:
            assert pipeline.world is not None
            # Warm up (connections, caches, consumer assignments), then measure a clean window.
            await simulate(pipeline.redirector_url, pipeline.world.targets, rate=min(rate, 200), duration_s=3,
                           mix=HUMANS)
            deadline = time.monotonic() + 30
            while pipeline.receiver.stats.accepted < 500 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            pipeline.receiver.stats.latencies_ms.clear()
            before = pipeline.receiver.stats.accepted
            stats = await simulate(pipeline.redirector_url, pipeline.world.targets, rate=rate,
                                   duration_s=duration_s, mix=HUMANS, stats=SimStats(), concurrency=128)
            deadline = time.monotonic() + 60
            while pipeline.receiver.stats.accepted - before < stats.redirected and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            latencies = sorted(pipeline.receiver.stats.latencies_ms)
        finally:
            await pipeline.stop()
    if not latencies:
        raise RuntimeError("no webhook arrived")

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))]

    return {"rate": int(rate), "duration_s": duration_s, "sent": stats.sent, "redirected": stats.redirected,
            "delivered": len(latencies), "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1),
            "max_ms": round(latencies[-1], 1), "achieved_rate": round(stats.redirected / duration_s),
            "targets": {"p50_ms": 25, "p99_ms": 100}}


def run(report: dict[str, Any], rate: float = 1000.0, duration_s: float = 20.0) -> None:
    """Measure click -> webhook latency at the target rate (report["e2e"]) and at 200/s (report["e2e_low"])."""
    report["e2e"] = asyncio.run(_measure(rate, duration_s))
    # Where the whole pipeline is not saturated on this machine: latency without a backlog.
    report["e2e_low"] = asyncio.run(_measure(200.0, duration_s))


def main() -> None:
    """Print the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    run(out, args.rate, args.duration)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
