"""Settings of `clickwire redirector`, from CLICKWIRE_REDIRECTOR_* variables (every one has a default)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from clickwire.settings import CommonSettings, Env

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RedirectorSettings:
    """Everything `clickwire redirector` reads from the environment."""

    common: CommonSettings
    host: str
    port: int
    workers: int
    domains: tuple[str, ...]
    trusted_proxies: tuple[Network, ...]
    trust_country_header: bool
    spool_max_mb: int
    queue_max: int
    publish: bool
    instance_id: str
    drain_s: float
    batch_max: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedirectorSettings:
        """Read the redirector's settings; raises SettingsError naming the first bad variable."""
        env = Env(environ)
        return cls(
            common=CommonSettings.from_env(environ),
            host=env.str("CLICKWIRE_REDIRECTOR_HOST", "127.0.0.1"),
            port=env.int("CLICKWIRE_REDIRECTOR_PORT", 8080, lo=0, hi=65535),
            workers=env.int("CLICKWIRE_REDIRECTOR_WORKERS", 1, lo=1, hi=64),
            # Empty: answer on any domain that has at least one link.
            domains=tuple(d.lower().rstrip(".") for d in env.list("CLICKWIRE_REDIRECTOR_DOMAINS")),
            trusted_proxies=env.networks("CLICKWIRE_REDIRECTOR_TRUSTED_PROXIES"),
            trust_country_header=env.bool("CLICKWIRE_REDIRECTOR_TRUST_COUNTRY_HEADER", False),
            spool_max_mb=env.int("CLICKWIRE_REDIRECTOR_SPOOL_MAX_MB", 1024, lo=1, hi=1_048_576),
            queue_max=env.int("CLICKWIRE_REDIRECTOR_QUEUE_MAX", 100_000, lo=1, hi=10_000_000),
            publish=env.bool("CLICKWIRE_REDIRECTOR_PUBLISH", True),
            # Unset: host name and pid, unique per process.
            instance_id=env.optional_str("CLICKWIRE_REDIRECTOR_INSTANCE_ID") or f"{socket.gethostname()}-{os.getpid()}",
            drain_s=env.float("CLICKWIRE_REDIRECTOR_DRAIN_S", 10.0, lo=0.0),
            batch_max=env.int("CLICKWIRE_REDIRECTOR_BATCH_MAX", 2000, lo=1, hi=100_000),
        )

    @property
    def spool_max_bytes(self) -> int:
        """The spool's size cap in bytes."""
        return self.spool_max_mb * 1024 * 1024
