"""Settings of the patterns service (``clickwire patterns``): ``CLICKWIRE_PATTERNS_*`` plus the common ones.

Thresholds are not here: they are per workspace (services/patterns/thresholds.py, PUT
/v1/settings/events). These are the operator's knobs: ids, ports, the destination checker.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clickwire.kafka import BULK_FETCH
from clickwire.settings import CommonSettings, Env

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PatternsSettings:
    """Everything ``clickwire patterns`` reads from the environment; every variable has a default."""

    common: CommonSettings
    app_id: str
    metrics_host: str
    metrics_port: int
    fetch_wait_ms: int
    commit_interval_s: float
    check_destinations: bool
    check_interval_s: float
    check_timeout_s: float
    check_concurrency: int
    allow_nets: tuple[IPNetwork, ...]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PatternsSettings:
        """Read the settings; raises SettingsError naming the first bad variable."""
        env = Env(environ)
        return cls(
            common=CommonSettings.from_env(environ),
            app_id=env.str("CLICKWIRE_PATTERNS_APP_ID", "clickwire-patterns"),
            metrics_host=env.str("CLICKWIRE_METRICS_HOST", "127.0.0.1"),
            metrics_port=env.int("CLICKWIRE_METRICS_PORT", 9104, lo=0, hi=65535),
            fetch_wait_ms=env.int("CLICKWIRE_PATTERNS_FETCH_WAIT_MS", BULK_FETCH["fetch_max_wait_ms"], lo=0, hi=1500),
            commit_interval_s=env.float("CLICKWIRE_PATTERNS_COMMIT_INTERVAL", 1.0, lo=0.05),
            check_destinations=env.bool("CLICKWIRE_PATTERNS_CHECK_DESTINATIONS", True),
            check_interval_s=env.float("CLICKWIRE_PATTERNS_CHECK_INTERVAL", 300.0, lo=0.05),
            check_timeout_s=env.float("CLICKWIRE_PATTERNS_CHECK_TIMEOUT", 5.0, lo=0.05),
            check_concurrency=env.int("CLICKWIRE_PATTERNS_CHECK_CONCURRENCY", 32, lo=1, hi=1000),
            # The destination checker's SSRF exemptions (tests and development), like the dispatcher's.
            allow_nets=env.networks("CLICKWIRE_WEBHOOK_ALLOW_NETS"),
        )

    @property
    def faust_id(self) -> str:
        """The Faust app id: consumer group and internal-topic prefix, under the topic prefix."""
        return self.common.topic_prefix + self.app_id

    @property
    def data_dir(self) -> Path:
        """Where Faust keeps its local data."""
        return self.common.home / "patterns"
