"""Settings of the enricher service: the Faust worker, its health port and the enrichment chain."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clickwire.kafka import PAUSING_FETCH_MAX_WAIT_MS
from clickwire.settings import CommonSettings, Env, SettingsError
from services.enricher.chain import EnricherConfig
from services.enricher.privacy import IP_MODES

COMPRESSIONS = ("zstd", "lz4", "snappy", "gzip", "none")


def persisted_secret(path: Path) -> str:
    """Return the secret stored at `path`, creating a random one (mode 0600) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    # O_EXCL: when two processes start at once, the loser reads the winner's secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


@dataclass(frozen=True)
class EnricherSettings:
    """Everything `clickwire enricher` and `clickwire enrich` read from the environment."""

    common: CommonSettings
    app_id: str
    metrics_host: str
    metrics_port: int
    stats_interval_s: float
    fetch_wait_ms: int
    commit_interval_s: float
    batch_size: int
    linger_ms: int
    compression: str
    velocity_window_s: int
    session_timeout_s: float
    chain: EnricherConfig = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EnricherSettings:
        """Read the enricher's CLICKWIRE_* variables; every one has a default."""
        source = os.environ if environ is None else environ
        env = Env(source)
        common = CommonSettings.from_env(source)
        secret = env.optional_str("CLICKWIRE_VISITOR_SECRET")
        if secret is None:
            secret = persisted_secret(common.home / "secrets" / "visitor")
        elif len(secret.encode()) < 16:
            raise SettingsError("CLICKWIRE_VISITOR_SECRET", "<hidden>", "a secret of at least 16 bytes")
        store_ip = env.choice("CLICKWIRE_STORE_IP", "truncated", IP_MODES)
        mmdb = env.optional_str("CLICKWIRE_GEOIP_MMDB")
        chain_env = {"CLICKWIRE_VISITOR_SECRET": secret, "CLICKWIRE_STORE_IP": store_ip}
        if mmdb:
            chain_env["CLICKWIRE_GEOIP_MMDB"] = mmdb
        return cls(
            common=common,
            app_id=env.str("CLICKWIRE_ENRICHER_APP_ID", "clickwire-enricher"),
            metrics_host=env.str("CLICKWIRE_METRICS_HOST", "127.0.0.1"),
            metrics_port=env.int("CLICKWIRE_METRICS_PORT", 9101, lo=0, hi=65535),
            stats_interval_s=env.float("CLICKWIRE_ENRICHER_STATS_INTERVAL", 1.0, lo=0.05),
            fetch_wait_ms=env.int("CLICKWIRE_ENRICHER_FETCH_WAIT_MS", PAUSING_FETCH_MAX_WAIT_MS, lo=0, hi=1500),
            commit_interval_s=env.float("CLICKWIRE_ENRICHER_COMMIT_INTERVAL", 1.0, lo=0.05),
            # Most clicks a fetch hands to one enrichment batch (the consumer's max_poll_records).
            batch_size=env.int("CLICKWIRE_ENRICHER_BATCH_SIZE", 1000, lo=1, hi=100_000),
            # Each fetched batch is sent as whole record batches: lingering adds nothing to them, only
            # delay (records that arrive while a request is in flight wait and go together anyway).
            linger_ms=env.int("CLICKWIRE_ENRICHER_LINGER_MS", 0, lo=0, hi=1000),
            # zstd (level 3): ~1.3 us per enriched click and 4.6x smaller; aiokafka writes lz4 at
            # level 9 (HC), ~5 us per click, for 3.2x.
            compression=env.choice("CLICKWIRE_ENRICHER_COMPRESSION", "zstd", COMPRESSIONS),
            velocity_window_s=env.int("CLICKWIRE_ENRICHER_VELOCITY_WINDOW", 60, lo=1, hi=86_400),
            # A killed worker's partitions wait this long before a restarted one gets them.
            session_timeout_s=env.float("CLICKWIRE_ENRICHER_SESSION_TIMEOUT", 10.0, lo=6.0),
            chain=EnricherConfig.from_env(chain_env),
        )

    @property
    def faust_id(self) -> str:
        """The Faust app id: the consumer group and changelog-topic prefix, under the topic prefix."""
        return self.common.topic_prefix + self.app_id

    @property
    def data_dir(self) -> Path:
        """Where Faust keeps its table data."""
        return self.common.home / "enricher"
