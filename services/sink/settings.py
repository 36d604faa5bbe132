"""Settings of `clickwire sink` and of clients of its /sql endpoint, from CLICKWIRE_SINK_* variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clickwire.settings import CommonSettings, Env

DEFAULT_SINK_URL = "http://127.0.0.1:9102"


@dataclass(frozen=True)
class SinkSettings:
    """Everything `clickwire sink` reads from the environment."""

    common: CommonSettings
    host: str
    port: int
    group_id: str
    batch_max: int
    flush_ms: int
    retry_max_s: float
    sql_max_rows: int
    fail_writes_file: Path | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SinkSettings:
        """Read the sink's settings; raises SettingsError naming the first bad variable."""
        env = Env(environ)
        fail_file = env.optional_str("CLICKWIRE_SINK_FAIL_WRITES_FILE")
        return cls(
            common=CommonSettings.from_env(environ),
            host=env.str("CLICKWIRE_SINK_HOST", "127.0.0.1"),
            port=env.int("CLICKWIRE_SINK_PORT", 9102, lo=0, hi=65535),
            group_id=env.str("CLICKWIRE_SINK_GROUP", "clickwire-sink"),
            batch_max=env.int("CLICKWIRE_SINK_BATCH_MAX", 5000, lo=1, hi=1_000_000),
            flush_ms=env.int("CLICKWIRE_SINK_FLUSH_MS", 500, lo=1, hi=60_000),
            retry_max_s=env.float("CLICKWIRE_SINK_RETRY_MAX_S", 5.0, lo=0.01),
            sql_max_rows=env.int("CLICKWIRE_SINK_SQL_MAX_ROWS", 100_000, lo=1),
            # Fault injection for tests and drills: while this file exists every insert fails.
            fail_writes_file=Path(fail_file).expanduser() if fail_file else None,
        )


@dataclass(frozen=True)
class SqlClientSettings:
    """Where services and `clickwire sql` find the sink's /sql endpoint (embedded mode)."""

    common: CommonSettings
    sink_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SqlClientSettings:
        """Read CLICKWIRE_SINK_URL (default http://127.0.0.1:9102) and the common settings."""
        env = Env(environ)
        return cls(
            common=CommonSettings.from_env(environ),
            sink_url=env.url("CLICKWIRE_SINK_URL") or DEFAULT_SINK_URL,
        )
