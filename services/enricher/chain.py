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
    ClickFacts,
    UserAgentClassifier,
    load_agents,
    load_networks,
)
from services.enricher.device import parse_device
from services.enricher.geo import GeoLocator
from services.enricher.privacy import IP_MODES, IpMode, VisitorHasher, store_ip
from services.enricher.referrer import ReferrerClassifier, load_rules
from services.enricher.trust import SignalBook

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


class Enricher:
    """Composes geo, device, referrer, bots, trust and privacy into enriched_click records."""

    def __init__(self, config: EnricherConfig, *, geo: GeoLocator | None = None) -> None:
        data = config.data_dir
        self._config = config
        self.signals = SignalBook.load(data / "signals.toml")
        networks = load_networks(data / "asns.toml")
        self._geo = geo or GeoLocator.from_mmdb_path(config.geoip_mmdb, org_asns=networks.org_asns)
        self._referrers = ReferrerClassifier(load_rules(data / "referrers.toml"))
        self._bots = BotDetector(
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
        detection = self._bots.detect(
            ClickFacts(
                user_agent=ua,
                method=str(raw.get("method") or "GET"),
                purpose=raw.get("purpose"),
                ch_ua=raw.get("ch_ua"),
                is_spider=dev.is_spider,
                spider_name=dev.browser,
                asn=geo.asn,
                as_org=geo.as_org,
                referrer_rewriter=ref.rewriter,
                referrer_host=ref.host,
                link_age_ms=link_age,
                velocity=velocity,
            )
        )
        verdict = self._score(detection.signals)
        device_type = "bot" if verdict.is_bot and detection.ua_identified else dev.device_type

        out = {k: v for k, v in raw.items() if k != "client_ip"}
        if link is not None:
            out["workspace_id"] = raw.get("workspace_id") or link.workspace_id
        out.update(
            ip=store_ip(client_ip, self._config.store_ip),
            tags=list(link.tags) if link is not None else [],
            campaign=link.campaign if link is not None else None,
            link_created_ms=link.created_ms if link is not None else None,
            country=geo.country,
            region=geo.region,
            city=geo.city,
            latitude=geo.latitude,
            longitude=geo.longitude,
            asn=geo.asn,
            as_org=geo.as_org,
            browser=dev.browser,
            browser_version=dev.browser_version,
            os=dev.os,
            os_version=dev.os_version,
            device_family=dev.device_family,
            device_type=device_type,
            referrer_host=ref.host,
            referrer_class=ref.klass,
            is_bot=verdict.is_bot,
            bot_kind=verdict.bot_kind,
            bot_name=detection.name if verdict.is_bot else "",
            trust_score=verdict.trust_score,
            trust_signals=list(verdict.trust_signals),
            visitor_hash=self._hasher.visitor_hash(client_ip, ua, str(raw.get("link_id") or ""), ts_ms),
            enriched_ms=now_ms,
        )
        for name in _UTM_FIELDS:
            out[name] = getattr(link, name) if link is not None else None
        return out
