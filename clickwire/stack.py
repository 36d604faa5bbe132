"""The local stack: a real Apache Kafka broker (KRaft, single node) without Docker.

``clickwire stack up``:

1. fetch: Maven resolves the broker jars (deploy/kafka/pom.xml) into ``$CLICKWIRE_HOME/kafka/libs``
   once; a stamp of the pom's hash makes later runs skip it;
2. render ``server.properties`` from deploy/kafka/server.properties with this home's ports and paths;
3. format the storage on first start (a fresh cluster id);
4. start ``java kafka.Kafka`` in the background with a bounded heap, recording its pid;
5. wait until the broker answers metadata requests;
6. create missing topics from deploy/topics.toml and apply ClickHouse migrations.

Every step is idempotent: ``stack up`` on a running stack only re-checks topics and migrations.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickwire import procs
from clickwire.errors import BrokerUnavailable, StackError
from clickwire.settings import REPO_ROOT, CommonSettings, Env

KAFKA_DIR = REPO_ROOT / "deploy" / "kafka"
BROKER = "kafka"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class StackSettings:
    """Where and how the local broker runs."""

    common: CommonSettings
    kafka_port: int
    heap_mb: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        """Read stack settings; the bootstrap defaults to the local broker's port."""
        env = Env(environ)
        port = env.int("CLICKWIRE_STACK_KAFKA_PORT", 9092, lo=1024, hi=65534)
        merged = dict(environ if environ is not None else __import__("os").environ)
        merged.setdefault("CLICKWIRE_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
        return cls(
            common=CommonSettings.from_env(merged),
            kafka_port=port,
            heap_mb=env.int("CLICKWIRE_STACK_KAFKA_HEAP_MB", 384, lo=128, hi=512),
        )

    def service_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """``environ`` for the services this stack starts: they reach its broker even when only
        CLICKWIRE_STACK_KAFKA_PORT was set (their own default bootstrap is port 9092)."""
        return {**environ, "CLICKWIRE_KAFKA_BOOTSTRAP": self.common.bootstrap}

    @property
    def kafka_home(self) -> Path:
        """State of the local broker."""
        return self.common.home / "kafka"

    @property
    def libs(self) -> Path:
        """Broker jars."""
        return self.kafka_home / "libs"

    @property
    def config_path(self) -> Path:
        """Rendered server.properties."""
        return self.kafka_home / "server.properties"


def _log(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def fetch_jars(s: StackSettings, progress: Progress | None = None) -> bool:
    """Resolve the broker jars with Maven unless already present; True when it downloaded."""
    pom = KAFKA_DIR / "pom.xml"
    stamp = s.libs / ".pom.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest and any(s.libs.glob("kafka_2.13-*.jar")):
        return False
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise StackError(f"`{tool}` is not on PATH: install Java 17+ and Maven (or use docker-compose.yml)")
    _log(progress, "fetching Apache Kafka jars from Maven Central (first run only)…")
    if s.libs.exists():
        shutil.rmtree(s.libs)
    s.libs.mkdir(parents=True)
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603
        ["mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",  # noqa: S607
         f"-Dlibs.dir={s.libs}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise StackError("maven could not fetch the Kafka jars: " + " | ".join(tail))
    stamp.write_text(digest + "\n")
    jars = len(list(s.libs.glob("*.jar")))
    _log(progress, f"fetched {jars} jars in {time.monotonic() - started:.1f} s")
    return True


def render_config(s: StackSettings) -> Path:
    """Write server.properties for this home and ports."""
    text = (KAFKA_DIR / "server.properties").read_text()
    values = {
        "${KAFKA_PORT}": str(s.kafka_port),
        "${CONTROLLER_PORT}": str(s.kafka_port + 1),
        "${DATA_DIR}": str(s.kafka_home / "data"),
    }
    for key, value in values.items():
        text = text.replace(key, value)
    s.kafka_home.mkdir(parents=True, exist_ok=True)
    s.config_path.write_text(text)
    return s.config_path


def _java(s: StackSettings, main: str, *args: str, heap: bool = False) -> list[str]:
    java = shutil.which("java") or "java"
    opts = [f"-Xms{s.heap_mb // 2}m", f"-Xmx{s.heap_mb}m", "-XX:+UseG1GC", "-XX:MaxDirectMemorySize=128m",
            "-XX:+ExitOnOutOfMemoryError"] if heap else ["-Xmx256m"]
    return [java, *opts, "-cp", str(s.libs / "*"),
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={s.kafka_home / 'logs'}", main, *args]


def new_cluster_id() -> str:
    """A KRaft cluster id shaped like Kafka's Uuid.randomUuid().toString(): unpadded url-safe base64 of
    16 random bytes, never starting with "-" (Kafka redraws those too: the storage tool would read
    such an id as an option and fail, about one start in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(s: StackSettings) -> bool:
    """Format KRaft storage once; True when it formatted."""
    if (s.kafka_home / "data" / "meta.properties").exists():
        return False
    cluster_id = new_cluster_id()
    result = subprocess.run(  # noqa: S603
        _java(s, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(s.config_path)),
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise StackError("formatting Kafka storage failed: " + (result.stdout + result.stderr).strip()[-400:])
    return True


def broker_status(s: StackSettings) -> procs.Managed | None:
    """The running local broker, or None."""
    return procs.read(s.common.home, BROKER)


def _log_tail(s: StackSettings, lines: int = 8) -> str:
    path = s.kafka_home / "logs" / "kafka.out"
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def start_broker(s: StackSettings, progress: Progress | None = None, timeout_s: float = 90.0) -> float:
    """Start the broker unless running; wait until it answers metadata. Returns seconds waited."""
    from clickwire.kafka import wait_for_broker

    if broker_status(s) is not None:
        return 0.0
    render_config(s)
    if format_storage(s):
        _log(progress, f"formatted Kafka storage in {s.kafka_home / 'data'}")
    started = time.monotonic()
    managed = procs.start(
        s.common.home, BROKER, _java(s, "kafka.Kafka", str(s.config_path), heap=True),
        marker=str(s.config_path), log_path=s.kafka_home / "logs" / "kafka.out",
    )
    _log(progress, f"started Kafka broker (pid {managed.pid}) on 127.0.0.1:{s.kafka_port}, waiting for it…")
    deadline = started + timeout_s
    while True:
        if procs.read(s.common.home, BROKER) is None:
            raise StackError(f"the Kafka broker exited during start: {_log_tail(s)}")
        try:
            await wait_for_broker(s.common, timeout_s=min(5.0, max(0.5, deadline - time.monotonic())))
            break
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                procs.stop(s.common.home, BROKER)
                raise StackError(f"the Kafka broker did not answer within {timeout_s:g} s: {_log_tail(s)}") from None
    return time.monotonic() - started


async def up(s: StackSettings, progress: Progress | None = None, *, migrations: bool = True) -> dict[str, Any]:
    """Bring the stack up (idempotent) and return what was done."""
    from clickwire.kafka import ensure_topics

    fetched = fetch_jars(s, progress)
    waited = await start_broker(s, progress)
    created = await ensure_topics(s.common)
    if created:
        _log(progress, f"created topics: {', '.join(sorted(created))}")
    applied: list[str] = []
    # A running sink owns the embedded engine and applies migrations itself at start.
    if migrations and (s.common.clickhouse_url or procs.read(s.common.home, "sink") is None):
        applied = await apply_clickhouse_migrations(s.common)
        if applied:
            _log(progress, f"applied ClickHouse migrations: {', '.join(applied)}")
    return {"fetched": fetched, "broker_start_s": waited, "topics_created": created, "migrations_applied": applied}


async def apply_clickhouse_migrations(common: CommonSettings) -> list[str]:
    """Apply pending migrations to the configured ClickHouse; return their names."""
    from clickwire.clickhouse import apply_migrations, open_store

    store = await open_store(common.clickhouse_url, common.clickhouse_dir)
    try:
        return await apply_migrations(store)
    finally:
        await store.close()


def down(s: StackSettings) -> list[str]:
    """Stop every process this home started (services first, the broker last); return their names."""
    stopped = []
    for managed in procs.all_managed(s.common.home):
        if managed.name != BROKER and procs.stop(s.common.home, managed.name):
            stopped.append(managed.name)
    if procs.stop(s.common.home, BROKER, timeout_s=45.0):
        stopped.append(BROKER)
    return stopped


def down_everywhere(root: Path) -> list[str]:
    """Stop processes of every clickwire home under ``root`` (tests leave homes in temp dirs there)."""
    stopped = []
    for run in sorted(root.rglob("run")):
        if not run.is_dir() or not any(run.glob("*.pid")):
            continue
        home = run.parent
        names = [m.name for m in procs.all_managed(home)]
        for name in sorted(names, key=lambda n: n == BROKER):  # services first, the broker last
            if procs.stop(home, name, timeout_s=45.0 if name == BROKER else 30.0):
                stopped.append(f"{name} ({home})")
    return stopped
