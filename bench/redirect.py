"""Redirect throughput and latency: nginx `return 302` vs the redirector without and with publishing.

Run: .venv/bin/python -m bench.redirect [--duration 8] [--rounds 5] [--connections 64] [--rate 20000]

Throughput: wrk (Debian package; installed if missing), 1 thread, 64 connections, --latency, the same
for each server, one worker process each: nginx from a temp nginx.conf, `clickwire redirector` with
CLICKWIRE_REDIRECTOR_PUBLISH=false, and with publishing (against the broker at
CLICKWIRE_KAFKA_BOOTSTRAP, default 127.0.0.1:9092, on topics of its own, serving one plain link). The
three servers run side by side, get one discarded warm-up round each (the publishing one also warms
the broker's JIT), and are measured in turns, `rounds` times (the order rotates); each
row shows the median of its rounds, and the ratios are medians of the per-round ratios: this machine
is shared, and servers measured seconds apart see the same background load. Next to req/s: the
server's CPU time (user + system, all its processes and threads) per request wrk counted, which moves
far less with the machine's load than req/s does.

Latency at a fixed rate: bench/pacer (an open-loop constant-rate generator in Go, standard library
only, built with `go build` into .clickwire/tools when missing) sends `rate` requests/s for `duration`
seconds over 64 keep-alive connections, first to nginx (what the generator and the machine add on
their own), then to the redirector with publishing. It reports latency both from each request's
scheduled send time (coordinated omission corrected, as wrk2 does, so it includes the generator's
own timer lateness) and from the moment the request was written (what wrk reports, the figure the
p99 target is read on), with the achieved rate and the generator's CPU. vegeta, used before, took
1.2 of the 2 cores at 20,000/s (nginx's p99 read 5.2 ms under it); the pacer takes about 0.2.
Without Go, or when the build fails, the paced rows say "not measured" and why. As many paced
rounds as wrk rounds, in turns, for all three servers; each paced row is the round with the median p99.

CPUs: with two or more, the servers under test get CPU 0 to themselves and everything else (this
script, wrk, the pacer and the local stack's Kafka broker) gets the others, the same for nginx and
the redirector. wrk's guidance is to keep the load generator off the server's cores, and in
production the broker runs on machines of its own; unpinned, on a 2-core machine the broker and the
generator take turns on the server's core, and the server's p99 and throughput measure those
neighbours (docs/performance.md has both). ``--no-pin`` measures unpinned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clickwire.codec import codec_for
from clickwire.kafka import ensure_topics, make_producer
from clickwire.links import Link
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name

ROOT = Path(__file__).resolve().parent.parent
HOST = "bench.test"
CODE = "bench1"
# Rounds per server, measured in turns. Per-round costs of publishing spread by ±3 points on this
# shared machine (e.g. 24.1%, 23.9%, 21.9%), so the median of five is steadier than that of three.
ROUNDS = 5
TOOLS = ROOT / ".clickwire" / "tools"
NGINX = "nginx return 302"
OFF = "redirector, no publishing"
ON = "redirector, publishing"
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _ensure_tools() -> None:
    missing = [pkg for pkg, exe in (("wrk", "wrk"), ("nginx", "nginx")) if shutil.which(exe) is None
               and not Path(f"/usr/sbin/{exe}").exists()]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get…", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, capture_output=True)


def pacer() -> tuple[Path | None, str]:
    """The pacer binary (bench/pacer), built into .clickwire/tools when missing or older than its
    source; (None, why) when there is none."""
    source = ROOT / "bench" / "pacer"
    binary = TOOLS / "pacer"
    if binary.exists() and binary.stat().st_mtime >= max(f.stat().st_mtime for f in source.iterdir()):
        return binary, ""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return None, "Go is not installed, so bench/pacer could not be built"
    TOOLS.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=source, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 or not binary.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"building bench/pacer failed: {tail}"
    return binary, ""


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, its threads and its live descendants."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            # Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
            fields = stat.rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) * _TICK_S
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def wrk(url: str, *, duration: int, connections: int, script: Path, pid: int) -> dict[str, float]:
    """Run wrk once against the server `pid`; return req/s, p50 and p99 in ms, server CPU µs per request."""
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    used = cpu_seconds(pid) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pct = {m.group(1): _ms(m.group(2), m.group(3)) for m in re.finditer(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct["50"], "p99_ms": pct["99"], "requests": requests,
            "cpu_us_per_req": used / max(requests, 1) * 1e6,
            "non_3xx": float(errors.group(1)) if errors else 0.0}


def paced(tool: Path, port: int, *, rate: int, duration: int, pid: int) -> dict[str, Any]:
    """Send `rate` requests/s open loop with the pacer; return achieved rate, latencies, both sides' CPU."""
    server_before = cpu_seconds(pid)
    done = subprocess.run(
        [str(tool), "-addr", f"127.0.0.1:{port}", "-path", f"/{CODE}", "-host", HOST, "-rate", str(rate),
         "-duration", f"{duration}s", "-c", "64"],
        check=True, capture_output=True, text=True, env={**os.environ, "GOMAXPROCS": "1"},
    )
    server_used = cpu_seconds(pid) - server_before
    out = json.loads(done.stdout)
    return {"rps": out["rate"], "target_rate": rate, "p50_ms": out["service_p50_ms"],
            "p99_ms": out["service_p99_ms"], "scheduled_p50_ms": out["p50_ms"], "scheduled_p99_ms": out["p99_ms"],
            "scheduled_max_ms": out["max_ms"], "requests": out["requests"],
            "status_codes": {int(k): v for k, v in out["status_codes"].items()}, "errors": out["errors"] or [],
            "cpu_us_per_req": server_used / max(out["requests"], 1) * 1e6,
            "generator_cores": out["cpu_seconds"] / duration}


def _nginx(tmp: Path, port: int, cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
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
                            stderr=subprocess.DEVNULL, preexec_fn=_on_cpus(cpus))


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


def _cpu_layout(pin: bool) -> tuple[set[int], set[int]] | None:
    """(server CPUs, everything else's CPUs), or None when not pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def _pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of `pid` to `cpus` (threads and processes it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, PermissionError):
            continue  # a thread that just ended


def _local_broker_pid(common: CommonSettings) -> int | None:
    from clickwire import procs, stack

    managed = procs.read(common.home, stack.BROKER)
    return managed.pid if managed is not None else None


def _on_cpus(cpus: set[int] | None) -> Any:
    """A preexec_fn that moves the child to `cpus` before it execs (its threads and workers inherit it)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def _redirector(common: CommonSettings, home: Path, port: int, publish: bool,
                cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKWIRE_")}
    env |= {"CLICKWIRE_KAFKA_BOOTSTRAP": common.bootstrap, "CLICKWIRE_TOPIC_PREFIX": common.topic_prefix,
            "CLICKWIRE_HOME": str(home), "CLICKWIRE_REDIRECTOR_PORT": str(port),
            "CLICKWIRE_REDIRECTOR_PUBLISH": "true" if publish else "false", "CLICKWIRE_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "clickwire", "redirector"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_on_cpus(cpus))


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


def _median_row(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "non_3xx")
    return {**{k: statistics.median(r[k] for r in runs) for k in keys}, "runs": runs}


def _in_turns(labels: list[str], rounds: int) -> Iterator[str]:
    """Each label once per round, the order rotating from round to round."""
    for i in range(rounds):
        yield from labels[i % len(labels):] + labels[: i % len(labels)]


def _median_paced(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The paced round with the median p99 (its other figures come with it), plus every round."""
    middle = sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]
    return {**middle, "runs": runs}


def run(report: dict[str, Any], *, duration: int = 8, rounds: int = ROUNDS, connections: int = 64,
        rate: int = 20_000, pin: bool = True) -> None:
    """Benchmark nginx and the redirector without and with publishing; fill `report`, print a table."""
    _ensure_tools()
    tool, why_not = pacer()
    common = CommonSettings.from_env()
    common = replace(common, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    asyncio.run(_setup_topics(common))
    report["redirect_loadavg_before"] = os.getloadavg()
    layout = _cpu_layout(pin)
    every_cpu = os.sched_getaffinity(0)
    broker = _local_broker_pid(common) if layout is not None else None
    report["redirect_cpus"] = {"servers": sorted(layout[0]), "others": sorted(layout[1]),
                               "broker_pinned": broker is not None} if layout is not None else None
    try:
        if layout is not None:
            os.sched_setaffinity(0, layout[1])  # this script, wrk and the pacer
            if broker is not None:
                _pin(broker, layout[1])
        _measure(report, common, tool, layout[0] if layout is not None else None,
                 duration=duration, rounds=rounds, connections=connections, rate=rate)
        report["redirect_paced"] = {"measured": tool is not None, "why_not": why_not, "rate": rate}
    finally:
        os.sched_setaffinity(0, every_cpu)
        if broker is not None:
            _pin(broker, every_cpu)
    _print(report, duration=duration, rounds=rounds, connections=connections)


def _measure(report: dict[str, Any], common: CommonSettings, tool: Path | None, server_cpus: set[int] | None, *,
             duration: int, rounds: int, connections: int, rate: int) -> None:
    runs: dict[str, list[dict[str, float]]] = {NGINX: [], OFF: [], ON: []}
    rows: dict[str, dict[str, Any]] = {}
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="clickwire-bench-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "host.lua"
        script.write_text(f'wrk.headers["Host"] = "{HOST}"\n')
        try:
            ports = {label: _free_port() for label in runs}
            procs.append(nginx := _nginx(tmp, ports[NGINX], server_cpus))
            procs.append(_redirector(common, tmp / "home-off", ports[OFF], publish=False, cpus=server_cpus))
            procs.append(on := _redirector(common, tmp / "home-on", ports[ON], publish=True, cpus=server_cpus))
            pids = {NGINX: nginx.pid, OFF: procs[1].pid, ON: on.pid}
            _wait_port(ports[NGINX])
            _health(ports[OFF])
            _health(ports[ON])
            labels = list(runs)
            # One discarded round each first: the publishing redirector's round also warms the broker,
            # a JVM that compiles for its first minute (it shares the two cores with the servers).
            for label in labels:
                wrk(f"http://127.0.0.1:{ports[label]}/{CODE}", duration=duration, connections=connections,
                    script=script, pid=pids[label])
            for label in _in_turns(labels, rounds):
                runs[label].append(wrk(f"http://127.0.0.1:{ports[label]}/{CODE}", duration=duration,
                                       connections=connections, script=script, pid=pids[label]))
            rows = {label: _median_row(r) for label, r in runs.items()}
            if tool is not None:
                # As many paced rounds as wrk rounds, in turns; each row is the median round by p99.
                paced_runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
                for label in _in_turns(labels, rounds):
                    paced_runs[label].append(paced(tool, ports[label], rate=rate, duration=duration, pid=pids[label]))
                for label, measured in paced_runs.items():
                    rows[f"{label}, paced {rate // 1000}k/s"] = _median_paced(measured)
            deadline = time.monotonic() + 30
            health = _health(ports[ON])
            while (health["queued"] or health["spool_bytes"]) and time.monotonic() < deadline:
                time.sleep(0.2)
                health = _health(ports[ON])
            report["redirect_published"] = health["published"]
            # Clicks that took the spool path (a full queue or a failed send) instead of going
            # straight to Kafka: each costs an extra write, read and decode in the server.
            metrics = text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{ports[ON]}/_/metrics",
                                                               timeout=5).text)
            report["redirect_spooled"] = next((int(sample.value) for family in metrics for sample in family.samples
                                               if sample.name == "clickwire_redirector_spooled_total"), None)
        finally:
            for proc in procs:
                _stop(proc)

    per_round = list(zip(runs[NGINX], runs[OFF], runs[ON], strict=True))
    report["redirect_rounds"] = [{"nginx": n["rps"], "off": off["rps"], "on": on["rps"]} for n, off, on in per_round]
    report["redirect"] = rows
    report["redirect_vs_nginx"] = statistics.median(on["rps"] / n["rps"] for n, _, on in per_round)
    report["redirect_off_vs_nginx"] = statistics.median(off["rps"] / n["rps"] for n, off, _ in per_round)
    report["redirect_publish_cost"] = statistics.median(1 - on["rps"] / off["rps"] for _, off, on in per_round)
    report["redirect_loadavg_after"] = os.getloadavg()


def _print(report: dict[str, Any], *, duration: int, rounds: int, connections: int) -> None:
    rows: dict[str, dict[str, Any]] = report["redirect"]
    paced_info = report["redirect_paced"]
    per_round = report["redirect_rounds"]
    nginx_rps = rows[NGINX]["rps"]
    cpus = report["redirect_cpus"]
    placement = (f"servers on CPU {','.join(map(str, cpus['servers']))}, generators"
                 f"{' and broker' if cpus['broker_pinned'] else ''} on {','.join(map(str, cpus['others']))}"
                 if cpus else "not pinned")
    print(f"\nRedirect (wrk -t1 -c{connections} -d{duration}s, 1 worker each, median of {rounds} rounds; "
          f"{placement}; load average {' '.join(f'{x:.1f}' for x in report['redirect_loadavg_before'])})")
    print(f"{'server':46} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'vs nginx':>9}")
    for label, row in rows.items():
        print(f"{label:46} {row['rps']:>10,.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['cpu_us_per_req']:>11.1f} {row['rps'] / nginx_rps:>9.2f}")
    for label, row in rows.items():
        if "target_rate" in row:
            print(f"{label}: {row['rps']:,.0f} of {row['target_rate']:,} req/s achieved, p50/p99 from the "
                  f"scheduled send {row['scheduled_p50_ms']:.2f}/{row['scheduled_p99_ms']:.2f} ms, statuses "
                  f"{row['status_codes']}, generator used {row['generator_cores']:.2f} cores"
                  + (f", errors {row['errors'][:3]}" if row["errors"] else ""))
    if not paced_info["measured"]:
        print(f"p99 at {paced_info['rate']:,} req/s: not measured ({paced_info['why_not']})")
    ratios = ", ".join(f"{r['on'] / r['nginx']:.2f}" for r in per_round)
    print(f"publishing vs nginx {report['redirect_vs_nginx']:.2f} (per round {ratios}); without publishing "
          f"{report['redirect_off_vs_nginx']:.2f}; publishing costs {report['redirect_publish_cost']:.1%}; "
          f"{report['redirect_published']:,} clicks acknowledged by Kafka, {report['redirect_spooled']} of them "
          f"through the spool")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--no-pin", action="store_true", help="leave every process on every CPU")
    args = parser.parse_args()
    run({}, duration=args.duration, rounds=args.rounds, connections=args.connections, rate=args.rate,
        pin=not args.no_pin)
