"""The stream's hot path: a raw click's Avro bytes to its enriched click's Avro bytes, by splicing.

enriched_click is raw_click without client_ip (schemas/avro) followed by the enriched fields, and
each group of enriched fields depends on one input only (chain.py's *_fields functions): the
stored IP and geo on the client IP, the device on the user agent and its hints, the referrer on
the Referer and the link's domain, the link fields on the link, the bot/trust fields on a few
reduced facts (Enricher.judge). So the raw body's bytes are copied as they are, each group is
encoded once per distinct input and kept as bytes, and per click only the visitor hash, the
velocity count and the cache keys are computed. Decoding, enriching and encoding through dicts
cost ~50 us of CPU per click here; this ~10 us with warm caches.

Byte-identical to ClickStream.encode(Enricher.enrich(...)) (tests/unit/enricher/test_fastpath.py).
Anything unusual (another writer schema, a non-canonical or invalid body, an empty required
field, an error in the chain) raises Unsupported, and the caller takes ClickStream.process, which
decides dead letters as before.

Caches are dicts emptied when full: cheaper per hit than an LRU, and a refill only recomputes the
group of fields of each input seen again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from clickwire.avrobin import varint
from services.enricher.avro import Unsupported, encode_fields, scan_raw
from services.enricher.bots import Network
from services.enricher.chain import (
    Enricher,
    LinkInfo,
    device_fields,
    geo_fields,
    judgement_fields,
    link_fields,
    referrer_fields,
)
from services.enricher.device import DeviceInfo, parse_device
from services.enricher.privacy import store_ip
from services.enricher.referrer import Referrer

_LINK_FIELDS: Final = ("tags", "campaign", "utm_source", "utm_medium", "utm_campaign", "utm_term",
                       "utm_content", "link_created_ms")
_GEO_FIELDS: Final = ("country", "region", "city", "latitude", "longitude", "asn", "as_org")
_DEVICE_FIELDS: Final = ("browser", "browser_version", "os", "os_version", "device_family")
_REFERRER_FIELDS: Final = ("referrer_host", "referrer_class")
_VERDICT_FIELDS: Final = ("is_bot", "bot_kind", "bot_name", "trust_score", "trust_signals")
_HASH_LENGTH: Final = varint(32)  # visitor_hash is always 32 hex characters


class _Address:
    """A client IP: its text, stored form and geo fields as bytes, and its listed network."""

    __slots__ = ("geo", "ip", "net", "text")

    def __init__(self, text: str, ip: bytes, geo: bytes, net: Network | None) -> None:
        self.text, self.ip, self.geo, self.net = text, ip, geo, net


class _Agent:
    """A user agent with its client hints; hashed by identity in the judgement cache's keys."""

    __slots__ = ("ch_ua", "dev", "device", "ua")

    def __init__(self, ua: str, ch_ua: str | None, dev: DeviceInfo, device: bytes) -> None:
        self.ua, self.ch_ua, self.dev, self.device = ua, ch_ua, dev, device


@dataclass(frozen=True, slots=True)
class _Referrer:
    ref: Referrer
    fields: bytes
    key: tuple[bool, str]  # what the judgement reads of it: the host only for rewriters


@dataclass(frozen=True, slots=True)
class _Link:
    link: LinkInfo
    fields: bytes
    workspace: bytes  # the workspace_id field, for raw clicks that carry none


@dataclass(frozen=True, slots=True)
class _Judged:
    device_type: bytes
    verdict: bytes
    is_bot: bool


class FastPath:
    """Enriches raw_click payloads written with our schema straight into enriched_click payloads."""

    def __init__(self, enricher: Enricher, raw_header: bytes, enriched_header: bytes,
                 cache_size: int = 1 << 16) -> None:
        self._enricher = enricher
        self._raw_header = raw_header
        self._start = len(raw_header)
        self._enriched_header = enriched_header
        self._cache_size = cache_size
        self._too_fast = enricher.signals.policy.velocity_per_minute
        self._addresses: dict[bytes, _Address] = {}
        self._agents: dict[tuple[bytes, bytes | None, bytes | None, bytes | None], _Agent] = {}
        self._referrers: dict[tuple[bytes | None, bytes], _Referrer] = {}
        self._links: dict[str, _Link] = {}
        self._judged: dict[tuple[Any, ...], _Judged] = {}
        self._no_link = encode_fields(link_fields(None), _LINK_FIELDS)

    def process(
        self, value: bytes | None, link_for: Callable[[str], LinkInfo | None], velocity: Callable[[str, int], int],
        enriched_ms: bytes,
    ) -> tuple[bytes, bytes, str, bool]:
        """(key, enriched payload, link id, is_bot) of a raw payload; Unsupported when the slow path
        must decide. `velocity` counts a velocity_key() at a timestamp (LocalVelocity.count);
        `enriched_ms` is the Avro long of the enrichment time."""
        if value is None:
            raise Unsupported("no value")
        try:
            return self._process(value, link_for, velocity, enriched_ms)
        except Unsupported:
            raise
        except Exception as exc:  # an error in the chain: the slow path dead-letters the click
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc

    def _process(
        self, value: bytes, link_for: Callable[[str], LinkInfo | None], velocity: Callable[[str, int], int],
        enriched_ms: bytes,
    ) -> tuple[bytes, bytes, str, bool]:
        if not value.startswith(self._raw_header):
            raise Unsupported("not our writer schema")
        (click_id, ts_ms, link_b, workspace, domain, code, method, ip_b, ua_b, referer, accept_language,
         purpose, ch_ua, ch_ua_mobile, ch_ua_platform, query, _qr, _status, destination, redirector_id,
         at_workspace, at_domain, at_client_ip, at_user_agent) = scan_raw(value, self._start)
        if not click_id or not link_b:
            raise Unsupported("empty required field")  # ClickStream dead-letters it
        try:
            # Copied as they are, so check them as decode would; the cache keys below are checked
            # when first decoded.
            for text in (click_id, workspace, code, accept_language, query, destination, redirector_id):
                if text and not text.isascii():
                    text.decode()
            link_id = link_b.decode()
        except UnicodeDecodeError as exc:
            raise Unsupported(str(exc)) from exc

        address = self._addresses.get(ip_b) or self._address(ip_b)
        agent = self._agents.get((ua_b, ch_ua, ch_ua_mobile, ch_ua_platform)) or self._agent(
            ua_b, ch_ua, ch_ua_mobile, ch_ua_platform)
        referrer = self._referrers.get((referer, domain)) or self._referrer(referer, domain)
        link = link_for(link_id)
        joined = None
        if link is not None:
            joined = self._links.get(link_id)
            if joined is None or joined.link is not link:
                joined = self._link(link_id, link)
        net = address.net
        fresh = net is not None and link is not None and link.created_ms is not None and \
            self._enricher.bots.is_fresh(net, ts_ms - link.created_ms)
        visitor_hash = self._enricher.hasher.visitor_hash(address.text, agent.ua, link_id, ts_ms)
        # Counted last: a click refused after this point would be counted again by the slow path.
        too_fast = velocity(f"{address.text}|{link_id}", ts_ms) > self._too_fast
        key = (agent, method, purpose, net, fresh, referrer.key, too_fast)
        judged = self._judged.get(key) or self._judge(key, referrer.ref)

        if joined is not None and not workspace and joined.link.workspace_id:
            raw_part = value[self._start:at_workspace] + joined.workspace + value[at_domain:at_client_ip]
        else:
            raw_part = value[self._start:at_client_ip]
        payload = b"".join((
            self._enriched_header, raw_part, value[at_user_agent:], address.ip,
            self._no_link if joined is None else joined.fields,
            address.geo, agent.device, judged.device_type, referrer.fields, judged.verdict, _HASH_LENGTH,
            visitor_hash.encode(), enriched_ms,
        ))
        return link_b, payload, link_id, judged.is_bot

    def _full(self, cache: dict[Any, Any]) -> None:
        if len(cache) >= self._cache_size:
            cache.clear()

    def _address(self, ip_b: bytes) -> _Address:
        text = _decode(ip_b)
        enricher = self._enricher
        geo = enricher.geo.lookup(text)
        stored = encode_fields({"ip": store_ip(text, enricher.store_ip_mode)}, ("ip",))
        address = _Address(text, stored, encode_fields(geo_fields(geo), _GEO_FIELDS),
                           enricher.bots.network(geo.asn, geo.as_org))
        self._full(self._addresses)
        self._addresses[ip_b] = address
        return address

    def _agent(self, ua_b: bytes, ch_ua_b: bytes | None, mobile_b: bytes | None,
               platform_b: bytes | None) -> _Agent:
        ua, ch_ua, mobile, platform = _decode(ua_b), _optional(ch_ua_b), _optional(mobile_b), _optional(platform_b)
        dev = parse_device(ua, ch_ua, mobile, platform)
        agent = _Agent(ua, ch_ua, dev, encode_fields(device_fields(dev), _DEVICE_FIELDS))
        self._full(self._agents)
        self._agents[(ua_b, ch_ua_b, mobile_b, platform_b)] = agent
        return agent

    def _referrer(self, referer_b: bytes | None, domain_b: bytes) -> _Referrer:
        ref = self._enricher.referrers.classify(_optional(referer_b), _decode(domain_b))
        referrer = _Referrer(ref, encode_fields(referrer_fields(ref), _REFERRER_FIELDS),
                             (ref.rewriter, ref.host if ref.rewriter else ""))
        self._full(self._referrers)
        self._referrers[(referer_b, domain_b)] = referrer
        return referrer

    def _link(self, link_id: str, link: LinkInfo) -> _Link:
        joined = _Link(link, encode_fields(link_fields(link), _LINK_FIELDS),
                       encode_fields({"workspace_id": link.workspace_id}, ("workspace_id",)))
        self._full(self._links)
        self._links[link_id] = joined
        return joined

    def _judge(self, key: tuple[Any, ...], ref: Referrer) -> _Judged:
        agent, method_b, purpose_b, net, fresh, _, too_fast = key
        # An error here becomes Unsupported in process(), and ClickStream dead-letters the click.
        judgement = self._enricher.judge(
            agent.ua, agent.ch_ua, agent.dev, _decode(method_b) or "GET", _optional(purpose_b), net, fresh,
            ref, too_fast)
        fields = judgement_fields(judgement)
        judged = _Judged(encode_fields(fields, ("device_type",)), encode_fields(fields, _VERDICT_FIELDS),
                         judgement.verdict.is_bot)
        self._full(self._judged)
        self._judged[key] = judged
        return judged


def _decode(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise Unsupported(str(exc)) from exc


def _optional(value: bytes | None) -> str | None:
    return None if value is None else _decode(value)
