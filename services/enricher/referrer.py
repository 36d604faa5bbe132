"""Referrer enrichment: the referring host and its class, from data/referrers.toml."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

DATA_FILE = Path(__file__).with_name("data") / "referrers.toml"
REFERRER_CLASSES = frozenset({"search", "social", "email", "ai_assistant", "internal", "direct", "other"})


@dataclass(frozen=True, slots=True)
class HostRule:
    """One line of referrers.toml: a host (or `name.*`), the class it implies, and its provenance."""

    host: str
    klass: str
    rewriter: bool
    source: str


@dataclass(frozen=True, slots=True)
class Referrer:
    """Where a click came from: referrer_host, referrer_class, and whether a mail rewriter sent it."""

    host: str = ""
    klass: str = "direct"
    rewriter: bool = False


DIRECT = Referrer()


def load_rules(path: Path = DATA_FILE) -> list[HostRule]:
    """Read and validate the host rules; an unknown class or a missing source is an error."""
    with path.open("rb") as f:
        doc = tomllib.load(f)
    rules: list[HostRule] = []
    for entry in doc.get("host", []):
        klass = entry["class"]
        if klass not in REFERRER_CLASSES or klass in ("internal", "direct"):
            raise ValueError(f"{path}: host {entry['host']!r} has invalid class {klass!r}")
        if not entry.get("source"):
            raise ValueError(f"{path}: host {entry['host']!r} has no source")
        rules.append(
            HostRule(entry["host"].lower(), klass, bool(entry.get("rewriter", False)), entry["source"])
        )
    return rules


def normalise_host(host: str) -> str:
    """Lower-case a host and drop a trailing dot, a port and a leading "www."."""
    host = host.strip().lower().rstrip(".")
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host[4:] if host.startswith("www.") else host


def referrer_host(referer: str | None) -> str:
    """Return the normalised host of a Referer header value ('' when absent or unparseable)."""
    if not referer:
        return ""
    try:
        parts = urlsplit(referer.strip())
        # android-app://com.google.android.gm/ has the app package where a host would be.
        host = parts.hostname or ""
    except ValueError:
        return ""
    return normalise_host(host)


class ReferrerClassifier:
    """Classifies Referer values; host answers are cached because a few hosts carry most clicks."""

    def __init__(self, rules: Iterable[HostRule], cache_size: int = 16_384) -> None:
        self._exact: dict[str, HostRule] = {}
        self._brands: dict[str, HostRule] = {}
        for rule in rules:
            if rule.host.endswith(".*"):
                self._brands[rule.host[:-2]] = rule
            else:
                self._exact[rule.host] = rule
        self._host_rule: Callable[[str], HostRule | None] = lru_cache(maxsize=cache_size)(self._match)

    def _match(self, host: str) -> HostRule | None:
        labels = host.split(".")
        # Most specific first: a.b.example.com, b.example.com, example.com, ...
        for i in range(len(labels) - 1):
            rule = self._exact.get(".".join(labels[i:]))
            if rule is not None:
                return rule
            # "google.*": the brand label followed by a public suffix of one or two short labels.
            suffix = labels[i + 1 :]
            if (
                labels[i] in self._brands
                and 1 <= len(suffix) <= 2
                and all(0 < len(s) <= 3 or s in ("com", "co") for s in suffix)
            ):
                return self._brands[labels[i]]
        return None

    def classify(self, referer: str | None, link_domain: str = "") -> Referrer:
        """Return the referrer's host and class; internal when it is the link's own domain."""
        host = referrer_host(referer)
        if not host:
            # A Referer we cannot parse is still a referrer: "other", not "direct".
            return DIRECT if not (referer or "").strip() else Referrer("", "other", False)
        if link_domain and host == normalise_host(link_domain):
            return Referrer(host, "internal", False)
        rule = self._host_rule(host)
        if rule is None:
            return Referrer(host, "other", False)
        return Referrer(host, rule.klass, rule.rewriter)
