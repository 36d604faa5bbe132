"""The enrichment chain: one raw click (+ its link, + a velocity count) in, one enriched_click record
out. Pure apart from warm caches, so the stream layer may retry it freely."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from services.enricher.bots import (
    DATA_DIR,
    BotDetector,
    Network,
    UserAgentClassifier,
    load_agents,
    load_networks,
)
from services.enricher.device import DeviceInfo, parse_device
from services.enricher.geo import Geo, GeoLocator
from services.enricher.privacy import IP_MODES, IpMode, VisitorHasher, store_ip
from services.enricher.referrer import Referrer, ReferrerClassifier, load_rules
from services.enricher.trust import SignalBook, Verdict

_UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """What the enricher knows about a link, materialised by the stream layer from the links topic."""

    workspace_id: str = ""
    tags: tuple[str, ...] = ()
    campaign: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    created_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    """The bot and trust part of an enriched click, and the device type it implies."""

    device_type: str
    verdict: Verdict
    bot_name: str


@dataclass(frozen=True)
class EnricherConfig:
    """Settings of the enrichment chain; the secret never prints."""

    visitor_secret: bytes = field(repr=False)
    store_ip: IpMode = "truncated"
    geoip_mmdb: str | None = None
    data_dir: Path = DATA_DIR

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EnricherConfig:
        """Read CLICKWIRE_VISITOR_SECRET (required), CLICKWIRE_STORE_IP, CLICKWIRE_GEOIP_MMDB."""
        env = os.environ if env is None else env
        try:
            secret = env["CLICKWIRE_VISITOR_SECRET"]
        except KeyError:
            raise KeyError("CLICKWIRE_VISITOR_SECRET is not set") from None
        mode = env.get("CLICKWIRE_STORE_IP", "truncated")
        if mode not in IP_MODES:
            raise ValueError(f"CLICKWIRE_STORE_IP must be one of {IP_MODES}, got {mode!r}")
        return cls(
            visitor_secret=secret.encode(),
            store_ip=cast(IpMode, mode),
            geoip_mmdb=env.get("CLICKWIRE_GEOIP_MMDB") or None,
        )


# The enriched fields by what decides them. fastpath.py encodes each group once per distinct input,
# so a field must be listed under the only input it depends on.
def link_fields(link: LinkInfo | None) -> dict[str, Any]:
    """The fields joined from the link (link.avsc), or their empty values for an unknown link."""
    if link is None:
        return {"tags": [], "campaign": None, **dict.fromkeys(_UTM_FIELDS), "link_created_ms": None}
    return {"tags": list(link.tags), "campaign": link.campaign, **{k: getattr(link, k) for k in _UTM_FIELDS},
            "link_created_ms": link.created_ms}


def geo_fields(geo: Geo) -> dict[str, Any]:
    """The fields of a client IP's location and network."""
    return {"country": geo.country, "region": geo.region, "city": geo.city, "latitude": geo.latitude,
            "longitude": geo.longitude, "asn": geo.asn, "as_org": geo.as_org}


def device_fields(dev: DeviceInfo) -> dict[str, Any]:
    """The fields of the user agent and its client hints, but device_type (judgement_fields)."""
    return {"browser": dev.browser, "browser_version": dev.browser_version, "os": dev.os,
            "os_version": dev.os_version, "device_family": dev.device_family}


def referrer_fields(ref: Referrer) -> dict[str, Any]:
    """The fields of the Referer given the link's domain."""
    return {"referrer_host": ref.host, "referrer_class": ref.klass}


def judgement_fields(judgement: Judgement) -> dict[str, Any]:
    """The bot and trust fields, and device_type (a bot identified by its UA is a "bot" device)."""
    verdict = judgement.verdict
    return {"device_type": judgement.device_type, "is_bot": verdict.is_bot, "bot_kind": verdict.bot_kind,
            "bot_name": judgement.bot_name, "trust_score": verdict.trust_score,
            "trust_signals": list(verdict.trust_signals)}


class Enricher:
    """Composes geo, device, referrer, bots, trust and privacy into enriched_click records."""

    def __init__(self, config: EnricherConfig, *, geo: GeoLocator | None = None) -> None:
        data = config.data_dir
        self._config = config
        self.signals = SignalBook.load(data / "signals.toml")
        networks = load_networks(data / "asns.toml")
        self._geo = geo or GeoLocator.from_mmdb_path(config.geoip_mmdb, org_asns=networks.org_asns)
        self._referrers = ReferrerClassifier(load_rules(data / "referrers.toml"))
        self.bots = BotDetector(
            UserAgentClassifier(load_agents(data / "bots.toml")), networks, self.signals.policy
        )
        self._hasher = VisitorHasher(config.visitor_secret)
        # Few distinct signal combinations exist; scoring each once keeps the hot path lean.
        self._score = lru_cache(maxsize=4096)(self.signals.score)

    def enrich(
        self, raw: Mapping[str, Any], link: LinkInfo | None, *, now_ms: int, velocity: int = 0
    ) -> dict[str, Any]:
        """Return the enriched_click record for a raw click: every raw field but client_ip, plus `ip`
        and every enriched field. Same inputs, same output."""
        client_ip = str(raw.get("client_ip") or "")
        ua = str(raw.get("user_agent") or "")
        ts_ms = int(raw["ts_ms"])
        geo = self._geo.lookup(client_ip)
        dev = parse_device(ua, raw.get("ch_ua"), raw.get("ch_ua_mobile"), raw.get("ch_ua_platform"))
        ref = self._referrers.classify(raw.get("referer"), str(raw.get("domain") or ""))
        link_age = ts_ms - link.created_ms if link is not None and link.created_ms is not None else None
        net = self.bots.network(geo.asn, geo.as_org)
        judgement = self.judge(
            ua, raw.get("ch_ua"), dev, str(raw.get("method") or "GET"), raw.get("purpose"), net,
            self.bots.is_fresh(net, link_age), ref, velocity > self.signals.policy.velocity_per_minute,
        )

        out = {k: v for k, v in raw.items() if k != "client_ip"}
        if link is not None:
            out["workspace_id"] = raw.get("workspace_id") or link.workspace_id
        out["ip"] = store_ip(client_ip, self._config.store_ip)
        out.update(link_fields(link))
        out.update(geo_fields(geo))
        out.update(device_fields(dev))
        out.update(referrer_fields(ref))
        out.update(judgement_fields(judgement))
        out["visitor_hash"] = self._hasher.visitor_hash(client_ip, ua, str(raw.get("link_id") or ""), ts_ms)
        out["enriched_ms"] = now_ms
        return out

    def judge(
        self, ua: str, ch_ua: str | None, dev: DeviceInfo, method: str, purpose: str | None,
        net: Network | None, fresh: bool, ref: Referrer, too_fast: bool,
    ) -> Judgement:
        """Bot signals, trust verdict, bot name and device type of a click from its reduced facts
        (BotDetector.decide); the referrer's host matters only when it is a rewriter."""
        detection = self.bots.decide(ua, ch_ua, dev.is_spider, dev.browser, method, purpose, net, fresh,
                                     ref.rewriter, ref.host, too_fast)
        verdict = self._score(detection.signals)
        device_type = "bot" if verdict.is_bot and detection.ua_identified else dev.device_type
        return Judgement(device_type, verdict, detection.name if verdict.is_bot else "")

    @property
    def geo(self) -> GeoLocator:
        """The locator (cached per address)."""
        return self._geo

    @property
    def referrers(self) -> ReferrerClassifier:
        """The referrer classifier."""
        return self._referrers

    @property
    def hasher(self) -> VisitorHasher:
        """The visitor hasher."""
        return self._hasher

    @property
    def store_ip_mode(self) -> IpMode:
        """How much of the client IP is stored."""
        return self._config.store_ip
