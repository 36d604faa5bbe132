"""Redirect throughput: nginx `return 302` vs the redirector without and with publishing (wrk).

Run: .venv/bin/python -m bench.redirect [--duration 10] [--connections 64]

Same wrk settings for each server (1 thread, 64 connections, --latency), one worker process each.
The redirector runs as `clickwire redirector` against the broker at CLICKWIRE_KAFKA_BOOTSTRAP
(default 127.0.0.1:9092) on topics of its own (a fresh prefix), serving one link. Then p99 at a
fixed rate: wrk has no rate limit (wrk2 is not packaged in Debian), so a Lua `delay()` paces each
of 40 connections to one request per 2 ms, i.e. at most 20,000 requests/s; the achieved rate is
reported next to the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clickwire.codec import codec_for
from clickwire.kafka import ensure_topics, make_producer
from clickwire.links import Link
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

HOST = "bench.test"
CODE = "bench1"


def _ensure_tools() -> None:
    missing = [pkg for pkg, exe in (("wrk", "wrk"), ("nginx", "nginx")) if shutil.which(exe) is None
               and not Path(f"/usr/sbin/{exe}").exists()]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get…", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, *, duration: int, connections: int, script: Path) -> dict[str, float]:
    """Run wrk once; return req/s, p50 and p99 in ms."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {m.group(1): _ms(m.group(2), m.group(3)) for m in re.finditer(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct["50"], "p99_ms": pct["99"], "non_3xx": float(errors.group(1)) if errors else 0.0}


def _nginx(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port}; location / {{ return 302 https://example.com/landing; }} }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def _setup_topics(common: CommonSettings) -> None:
    await ensure_topics(common, [Topic.LINKS, Topic.LINK_STATS, Topic.CLICKS_RAW])
    now = int(time.time() * 1000)
    link = Link(id=str(uuid.uuid4()), workspace_id="ws_bench", domain=HOST, code=CODE,
                destination="https://example.com/landing", created_ms=now, updated_ms=now)
    producer = make_producer(common)
    await producer.start()
    try:
        await producer.send_and_wait(name(Topic.LINKS, common.topic_prefix),
                                     codec_for(Topic.LINKS).encode(link.to_avro()), key=link.key.encode())
    finally:
        await producer.stop()


def _redirector(common: CommonSettings, home: Path, port: int, publish: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKWIRE_")}
    env |= {"CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap, "CLICKWIRE_TOPIC_PREFIX": common.topic_prefix,
            "CLICKWIRE_HOME": str(home), "CLICKWIRE_REDIRECTOR_PORT": str(port),
            "CLICKWIRE_REDIRECTOR_PUBLISH": "true" if publish else "false", "CLICKWIRE_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "clickwire", "redirector"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _health(port: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return dict(httpx.get(f"http://127.0.0.1:{port}/_/health", timeout=1).json())
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("redirector did not become healthy")


def run(report: dict[str, Any], *, duration: int = 10, connections: int = 64) -> None:
    """Benchmark nginx, the redirector without and with publishing; fill `report` and print a table."""
    _ensure_tools()
    common = CommonSettings.from_env()
    common = replace(common, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    asyncio.run(_setup_topics(common))
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="clickwire-bench-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "host.lua"
        script.write_text(f'wrk.headers["Host"] = "{HOST}"\n')
        paced = tmp / "paced.lua"
        paced.write_text(f'wrk.headers["Host"] = "{HOST}"\nfunction delay() return 2 end\n')

        port = _free_port()
        nginx = _nginx(tmp, port)
        try:
            _wait_port(port)
            rows["nginx return 302"] = wrk(f"http://127.0.0.1:{port}/{CODE}", duration=duration,
                                           connections=connections, script=script)
        finally:
            _stop(nginx)

        for publish in (False, True):
            port = _free_port()
            proc = _redirector(common, tmp / f"home-{publish}", port, publish)
            try:
                _health(port)
                url = f"http://127.0.0.1:{port}/{CODE}"
                label = "redirector, publishing" if publish else "redirector, no publishing"
                rows[label] = wrk(url, duration=duration, connections=connections, script=script)
                if publish:
                    rows["redirector, publishing, paced 20k/s"] = wrk(url, duration=duration, connections=40,
                                                                     script=paced)
                    deadline = time.monotonic() + 30
                    health = _health(port)
                    while (health["queued"] or health["spool_bytes"]) and time.monotonic() < deadline:
                        time.sleep(0.2)
                        health = _health(port)
                    report["redirect_published"] = health["published"]
            finally:
                _stop(proc)

    nginx_rps = rows["nginx return 302"]["rps"]
    off, on = rows["redirector, no publishing"]["rps"], rows["redirector, publishing"]["rps"]
    report["redirect"] = rows
    report["redirect_vs_nginx"] = on / nginx_rps
    report["redirect_publish_cost"] = 1 - on / off
    print(f"\nRedirect (wrk -t1 -c{connections} -d{duration}s, 1 worker each)")
    print(f"{'server':40} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs nginx':>9}")
    for label, row in rows.items():
        print(f"{label:40} {row['rps']:>10,.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['rps'] / nginx_rps:>9.2f}")
    print(f"publishing costs {report['redirect_publish_cost']:.0%} of throughput; "
          f"{report['redirect_published']:,} clicks acknowledged by Kafka in the publishing runs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    run({}, duration=args.duration, connections=args.connections)
