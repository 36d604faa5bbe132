"""Typed, frozen settings read from ``CLICKWIRE_*`` environment variables.

Every service builds one settings object at start. Parsing is strict: a value that does not
parse raises :class:`SettingsError` whose message is one line naming the variable and the
form it expects, so ``clickwire <service>`` can print it and exit without a traceback.

Booleans accept only ``true/false/1/0/yes/no/on/off`` (``bool("False")`` is true, which is
how misconfigurations hide). Secrets are wrapped in :class:`Secret`, whose ``repr`` and
``str`` never show the value, so a settings object can be logged whole.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

REPO_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(ValueError):
    """A setting is missing or malformed; ``str()`` is one line naming the variable."""

    def __init__(self, name: str, value: str | None, expected: str) -> None:
        shown = "<unset>" if value is None else repr(value if len(value) < 80 else value[:77] + "...")
        super().__init__(f"{name}={shown}: expected {expected}")
        self.name = name
        self.expected = expected


@dataclass(frozen=True)
class Secret:
    """A string that never prints itself."""

    _value: str = field(repr=False)

    def get(self) -> str:
        """Return the secret value; call only where it is used."""
        return self._value

    def __str__(self) -> str:
        return "**********"

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __bool__(self) -> bool:
        return bool(self._value)


# Env has methods named str/int/float/bool/list; inside its body those names mean the methods.
_Str: TypeAlias = str
_Int: TypeAlias = int
_Float: TypeAlias = float
_Bool: TypeAlias = bool


class Env:
    """Reads typed values from one environment mapping, naming the variable on every error."""

    # Every variable name any settings class has asked for in this process; docker-compose.yml
    # and the docs are checked against it (tests/unit/test_compose.py).
    seen: set[str] = set()
    # name -> (expected form, default as text); feeds `clickwire settings` and docs/operations.md.
    catalog: dict[str, tuple[str, str]] = {}

    def __init__(self, environ: Mapping[_Str, _Str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    def _raw(self, name: _Str) -> _Str | None:
        Env.seen.add(name)
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    @staticmethod
    def _note(name: _Str, expected: _Str, default: object) -> None:
        if isinstance(default, tuple):
            shown = ",".join(map(_Str, default))
        elif isinstance(default, _Bool):
            shown = "true" if default else "false"
        else:
            shown = "" if default is None else _Str(default)
        shown = shown.replace(_Str(REPO_ROOT), "<checkout>")
        known = Env.catalog.get(name)
        if known is not None and known[1] != shown:
            # One variable, several services with their own defaults (e.g. CLICKWIRE_METRICS_PORT).
            shown = "per service"
        Env.catalog[name] = (expected, shown)

    def _parse(self, name: _Str, default: T | None, expected: _Str, parse: Callable[[_Str], T]) -> T:
        self._note(name, expected, default)
        raw = self._raw(name)
        if raw is None:
            if default is None:
                raise SettingsError(name, None, expected)
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError):
            raise SettingsError(name, raw, expected) from None

    def str(self, name: _Str, default: _Str | None = None) -> _Str:
        """A non-empty string, or the default; no default means required."""
        return self._parse(name, default, "a non-empty string", lambda s: s)

    def optional_str(self, name: _Str) -> _Str | None:
        """A string, or None when unset or empty."""
        self._note(name, "a string (optional)", None)
        return self._raw(name)

    def int(self, name: _Str, default: _Int | None = None, *, lo: _Int | None = None, hi: _Int | None = None) -> _Int:
        """An integer within [lo, hi]."""
        bounds = f" between {lo} and {hi}" if lo is not None and hi is not None else (
            f" >= {lo}" if lo is not None else "")

        def parse(s: _Str) -> _Int:
            value = int(s, 10)
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(s)
            return value

        return self._parse(name, default, f"an integer{bounds}", parse)

    def float(self, name: _Str, default: _Float | None = None, *, lo: _Float | None = None) -> _Float:
        """A finite number >= lo."""

        def parse(s: _Str) -> _Float:
            value = float(s)
            if value != value or value in (float("inf"), float("-inf")) or (lo is not None and value < lo):
                raise ValueError(s)
            return value

        return self._parse(name, default, "a number" + (f" >= {lo}" if lo is not None else ""), parse)

    def bool(self, name: _Str, default: _Bool) -> _Bool:
        """A strict boolean: true/false, 1/0, yes/no, on/off."""

        def parse(s: _Str) -> _Bool:
            low = s.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(s)

        return self._parse(name, default, "true or false", parse)

    def choice(self, name: _Str, default: _Str, choices: tuple[_Str, ...]) -> _Str:
        """One of a fixed set of words (case-insensitive)."""

        def parse(s: _Str) -> _Str:
            if s.lower() not in choices:
                raise ValueError(s)
            return s.lower()

        return self._parse(name, default, "one of " + ", ".join(choices), parse)

    def secret(self, name: _Str, default: _Str | None = None) -> Secret:
        """A secret string; never printed."""
        self._note(name, "a secret string (never printed)", None)
        raw = self._raw(name)
        if raw is None:
            if default is None:
                raise SettingsError(name, None, "a secret string")
            return Secret(default)
        return Secret(raw)

    def path(self, name: _Str, default: Path) -> Path:
        """A filesystem path (not checked for existence)."""
        return self._parse(name, default, "a path", lambda s: Path(s).expanduser())

    def host_ports(self, name: _Str, default: _Str) -> tuple[_Str, ...]:
        """A comma-separated list of host:port."""

        def parse(s: _Str) -> tuple[_Str, ...]:
            items = tuple(p.strip() for p in s.split(",") if p.strip())
            if not items:
                raise ValueError(s)
            for item in items:
                m = _HOSTPORT.match(item)
                if not m or not 0 < int(m.group(2)) < 65536:
                    raise ValueError(item)
            return items

        return self._parse(name, parse(default), "host:port[,host:port...]", parse)

    def url(self, name: _Str, schemes: tuple[_Str, ...] = ("http", "https")) -> _Str | None:
        """An absolute URL with one of the schemes, or None when unset."""
        self._note(name, f"a URL like {schemes[0]}://host:port (optional)", None)
        raw = self._raw(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise SettingsError(name, raw, f"a URL like {schemes[0]}://host:port")
        return raw

    def networks(self, name: _Str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """A comma-separated list of CIDR networks, empty when unset."""

        def parse(s: _Str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
            return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in s.split(",") if p.strip())

        return self._parse(name, (), "comma-separated CIDRs like 127.0.0.1/32", parse)

    def ports(self, name: _Str) -> frozenset[_Int] | None:
        """A set of TCP ports like ``80,443,8000-8999``; None (any port) when unset or ``any``."""
        self._note(name, "ports like 80,443,8000-8999, or any", "any")
        raw = self._raw(name)
        if raw is None or raw.lower() == "any":
            return None
        found: set[_Int] = set()
        try:
            for part in raw.split(","):
                lo, _, hi = part.strip().partition("-")
                first, last = _Int(lo), _Int(hi or lo)
                if not 0 < first <= last < 65536:
                    raise ValueError(part)
                found.update(range(first, last + 1))
        except ValueError:
            raise SettingsError(name, raw, "ports like 80,443,8000-8999, or any") from None
        return frozenset(found)

    def list(self, name: _Str, default: tuple[_Str, ...] = ()) -> tuple[_Str, ...]:
        """A comma-separated list of words."""
        self._note(name, "a comma-separated list", default)
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(p.strip() for p in raw.split(",") if p.strip())


def default_home() -> Path:
    """Where clickwire keeps local state (.clickwire/ in the checkout)."""
    return REPO_ROOT / ".clickwire"


@dataclass(frozen=True)
class CommonSettings:
    """Settings every service shares."""

    kafka_bootstrap: tuple[str, ...]
    kafka_connect_timeout_s: float
    topic_prefix: str
    home: Path
    schema_registry_url: str | None
    clickhouse_url: str | None
    log_level: str
    log_format: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommonSettings:
        """Read the shared settings; raises SettingsError naming the first bad variable."""
        env = Env(environ)
        return cls(
            kafka_bootstrap=env.host_ports("CLICKWIRE_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            kafka_connect_timeout_s=env.float("CLICKWIRE_KAFKA_CONNECT_TIMEOUT", 8.0, lo=0.1),
            topic_prefix=env.optional_str("CLICKWIRE_TOPIC_PREFIX") or "",
            home=env.path("CLICKWIRE_HOME", default_home()),
            schema_registry_url=env.url("CLICKWIRE_SCHEMA_REGISTRY_URL"),
            clickhouse_url=env.url("CLICKWIRE_CLICKHOUSE_URL"),
            log_level=env.choice("CLICKWIRE_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_format=env.choice("CLICKWIRE_LOG_FORMAT", "json", ("json", "console")),
        )

    @property
    def bootstrap(self) -> str:
        """The bootstrap list as aiokafka takes it."""
        return ",".join(self.kafka_bootstrap)

    @property
    def clickhouse_dir(self) -> Path:
        """Data directory of the embedded ClickHouse engine."""
        return self.home / "clickhouse"


# Modules holding a settings class with ``from_env``; test_compose builds each with an empty
# environment to learn every variable clickwire accepts.
SETTINGS_MODULES: tuple[str, ...] = (
    "clickwire.settings:CommonSettings",
    "clickwire.stack:StackSettings",
    "services.api.settings:ApiSettings",
    "services.api.webhooks:WebhookApiSettings",
    "services.redirector.settings:RedirectorSettings",
    "services.enricher.settings:EnricherSettings",
    "services.sink.settings:SinkSettings",
    "services.sink.settings:SqlClientSettings",
    "services.dispatcher.settings:DispatcherSettings",
    "services.patterns.settings:PatternsSettings",
)


def load_all_settings() -> dict[str, tuple[str, str]]:
    """Build every service's settings from an empty environment; return the catalog of variables."""
    import importlib

    for entry in SETTINGS_MODULES:
        module, cls = entry.split(":")
        try:
            getattr(importlib.import_module(module), cls).from_env({})
        except ModuleNotFoundError:
            continue
    return dict(sorted((k, v) for k, v in Env.catalog.items() if k.startswith("CLICKWIRE_")))
