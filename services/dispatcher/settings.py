"""The dispatcher's settings: ``CLICKWIRE_DISPATCHER_*`` and ``CLICKWIRE_WEBHOOK_*`` variables.

Every variable has a default, so ``DispatcherSettings.from_env({})`` works; tests shorten the retry
schedule (``CLICKWIRE_DISPATCHER_RETRY_SCHEDULE=0,0.2,0.5``) and allow 127.0.0.1
(``CLICKWIRE_WEBHOOK_ALLOW_NETS=127.0.0.1/32``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from clickwire.settings import CommonSettings, Env, SettingsError
from services.dispatcher.retry import DEFAULT_SCHEDULE_S, RetryPolicy

ROLES = ("all", "router", "deliverer")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Return seconds for ``90``, ``1.5s``, ``250ms``, ``30m``, ``2h`` or ``5d``; ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def _duration(env: Env, name: str, default: float) -> float:
    raw = env.optional_str(name)
    if raw is None:
        return default
    try:
        return parse_duration(raw)
    except ValueError:
        raise SettingsError(name, raw, "a duration like 30, 1.5s, 250ms, 30m, 2h or 5d") from None


def _schedule(env: Env, name: str) -> tuple[float, ...]:
    raw = env.optional_str(name)
    if raw is None:
        return DEFAULT_SCHEDULE_S
    try:
        values = tuple(parse_duration(p) for p in raw.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values:
        raise SettingsError(name, raw, "comma-separated waits before each attempt, like 0,5s,5m,30m,2h")
    return values


@dataclass(frozen=True)
class DispatcherSettings:
    """Router and deliverer settings."""

    common: CommonSettings
    role: str
    metrics_port: int
    retry: RetryPolicy
    disable_after_s: float
    hold_max_s: float
    lane_max: int
    max_buffered: int
    unknown_grace_s: float
    allow_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    allowed_ports: frozenset[int] | None
    connect_timeout_s: float
    total_timeout_s: float
    max_connections: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DispatcherSettings:
        """Read the settings; raises SettingsError naming the first bad variable."""
        env = Env(environ)
        return cls(
            common=CommonSettings.from_env(environ),
            role=env.choice("CLICKWIRE_DISPATCHER_ROLE", "all", ROLES),
            metrics_port=env.int("CLICKWIRE_METRICS_PORT", 9103, lo=0, hi=65535),
            retry=RetryPolicy(
                schedule_s=_schedule(env, "CLICKWIRE_DISPATCHER_RETRY_SCHEDULE"),
                jitter=_jitter(env),
                retry_after_min_s=_duration(env, "CLICKWIRE_DISPATCHER_RETRY_AFTER_MIN", 1.0),
                retry_after_max_s=_duration(env, "CLICKWIRE_DISPATCHER_RETRY_AFTER_MAX", 10 * 3600.0),
            ),
            disable_after_s=_duration(env, "CLICKWIRE_DISPATCHER_DISABLE_AFTER", 5 * 86400.0),
            hold_max_s=_duration(env, "CLICKWIRE_DISPATCHER_HOLD_MAX", 2.0),
            lane_max=env.int("CLICKWIRE_DISPATCHER_LANE_MAX", 1000, lo=1),
            max_buffered=env.int("CLICKWIRE_DISPATCHER_MAX_BUFFERED", 50_000, lo=1),
            unknown_grace_s=_duration(env, "CLICKWIRE_DISPATCHER_UNKNOWN_GRACE", 10.0),
            allow_nets=env.networks("CLICKWIRE_WEBHOOK_ALLOW_NETS"),
            allowed_ports=env.ports("CLICKWIRE_WEBHOOK_PORTS"),
            connect_timeout_s=_duration(env, "CLICKWIRE_WEBHOOK_CONNECT_TIMEOUT", 3.0),
            total_timeout_s=_duration(env, "CLICKWIRE_WEBHOOK_TIMEOUT", 10.0),
            max_connections=env.int("CLICKWIRE_DISPATCHER_MAX_CONNECTIONS", 1000, lo=1),
        )


def _jitter(env: Env) -> float:
    value = env.float("CLICKWIRE_DISPATCHER_RETRY_JITTER", 0.2, lo=0.0)
    if value >= 1:
        raise SettingsError("CLICKWIRE_DISPATCHER_RETRY_JITTER", str(value), "a fraction in [0, 1)")
    return value
