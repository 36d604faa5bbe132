"""The raw click record: what the response path captures, how it is finished, and its Avro encoding.

The response path only captures (a :data:`Captured` tuple of values it already holds, no parsing);
the publisher's batch step finishes each click (:class:`Finisher`: client IP from the peer and, behind
a trusted proxy, the forwarded headers; the QR flag; the instance id) and encodes it.

The encoder is hand-written and byte-identical to fastavro's (tests/unit/redirector/test_app_rawclick.py):
fastavro's generic writer costs ~9.5 us per click; this one writes the fixed field order of
schemas/avro/raw_click.avsc directly (~1.2 us as Python). The click is a tuple in schema order, which
is also cheaper to build than a dict. If raw_click.avsc changes, FIELDS, Finisher and encode() change
with it (the test compares the encoder with fastavro).

This module and clickwire/avrobin.py run compiled by mypyc where `make setup` could build them
(tools/build_native.py; ~0.7 us per click), so keep them fully typed; tests/unit/test_native.py
checks that the compiled and the plain module write the same bytes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from clickwire.avrobin import optional_string as _opt
from clickwire.avrobin import string as _s
from clickwire.avrobin import varint as _varint

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FIELDS: Final = (
    "click_id", "ts_ms", "link_id", "workspace_id", "domain", "code", "method", "client_ip", "user_agent",
    "referer", "accept_language", "purpose", "ch_ua", "ch_ua_mobile", "ch_ua_platform", "query", "qr",
    "status", "destination", "redirector_id",
)
_NULL: Final = b"\x00"
_BRANCH1: Final = b"\x02"

RawClick = tuple[str, int, str, str, str, str, str, str, str, str | None, str | None, str | None,
                 str | None, str | None, str | None, str, bool, int, str | None, str]

# What the response path hands over: FIELDS[0:16] except that the click id is still the UTF-8 bytes
# the response's X-Click-Id was written from and client_ip is the server's peer address (the client
# unless a trusted proxy forwarded it), then status, destination, X-Forwarded-For and Forwarded (None
# unless a trusted proxy is configured). Finisher turns it into a RawClick.
Captured = tuple[bytes, int, str, str, str, str, str, str, str, str | None, str | None, str | None,
                 str | None, str | None, str | None, str, int, str | None, str | None, str | None]


def encode(header: bytes, c: RawClick) -> bytes:
    """Return `header` + the Avro body of one click given as a tuple in FIELDS order."""
    return b"".join((
        header, _s(c[0]), _varint(c[1]), _s(c[2]), _s(c[3]), _s(c[4]), _s(c[5]), _s(c[6]), _s(c[7]),
        _s(c[8]), _opt(c[9]), _opt(c[10]), _opt(c[11]), _opt(c[12]), _opt(c[13]), _opt(c[14]), _s(c[15]),
        b"\x01" if c[16] else b"\x00", _varint(c[17]), _opt(c[18]), _s(c[19]),
    ))


def as_dict(c: RawClick) -> dict[str, object]:
    """The click as a record dict (for codecs and tests)."""
    return dict(zip(FIELDS, c, strict=True))


class Finisher:
    """Turns captured clicks into RawClicks, or straight into Avro, off the response path."""

    __slots__ = ("_header", "_instance", "_last_ts", "_links", "_tails", "_trusted")

    def __init__(self, instance_id: str, trusted_proxies: Sequence[Network] = (), header: bytes = b"") -> None:
        self._instance = instance_id
        self._trusted = tuple(trusted_proxies)
        self._header = header
        # Encoded runs of fields that repeat from click to click: (link_id, workspace, domain, code)
        # and (status, destination, redirector_id); bounded, cleared when full.
        self._links: dict[tuple[str, str, str, str], bytes] = {}
        self._tails: dict[tuple[int, str | None], bytes] = {}
        self._last_ts: tuple[int, bytes] = (-1, b"")

    def __call__(self, c: Captured) -> RawClick:
        """The RawClick of one captured click."""
        ip = client_ip(c[7], c[18], c[19], self._trusted) if self._trusted else c[7]
        query = c[15]
        return (c[0].decode(), c[1], c[2], c[3], c[4], c[5], c[6], ip, c[8], c[9], c[10], c[11], c[12], c[13], c[14],
                query, "qr=" in query and is_qr(query), c[16], c[17], self._instance)

    def encode(self, c: Captured) -> bytes:
        """The header and Avro body of the finished click: encode(header, self(c)), about twice as fast."""
        link = self._links.get((c[2], c[3], c[4], c[5]))
        if link is None:
            if len(self._links) >= _RUNS_MAX:
                self._links.clear()
            link = self._links[(c[2], c[3], c[4], c[5])] = _s(c[2]) + _s(c[3]) + _s(c[4]) + _s(c[5])
        tail = self._tails.get((c[16], c[17]))
        if tail is None:
            if len(self._tails) >= _RUNS_MAX:
                self._tails.clear()
            tail = self._tails[(c[16], c[17])] = _varint(c[16]) + _opt(c[17]) + _s(self._instance)
        ts, ts_bytes = self._last_ts
        if c[1] != ts:  # clicks come in bursts within one millisecond
            ts_bytes = _varint(c[1])
            self._last_ts = (c[1], ts_bytes)
        ip = client_ip(c[7], c[18], c[19], self._trusted) if self._trusted else c[7]
        query = c[15]
        click_id = c[0]
        return b"".join((
            self._header,
            _varint(len(click_id)) + click_id,
            ts_bytes, link, _METHODS.get(c[6]) or _s(c[6]), _s(ip), _s(c[8]),
            _NULL if c[9] is None else _BRANCH1 + _s(c[9]),
            _NULL if c[10] is None else _BRANCH1 + _s(c[10]),
            _NULL if c[11] is None else _BRANCH1 + _s(c[11]),
            _NULL if c[12] is None else _BRANCH1 + _s(c[12]),
            _NULL if c[13] is None else _BRANCH1 + _s(c[13]),
            _NULL if c[14] is None else _BRANCH1 + _s(c[14]),
            _s(query), b"\x01" if "qr=" in query and is_qr(query) else b"\x00", tail,
        ))


_RUNS_MAX: Final = 4096
_METHODS: Final = {"GET": _s("GET"), "HEAD": _s("HEAD")}


def is_qr(query: str) -> bool:
    """True when the query has qr=1 (the parameter QR codes printed by clickwire carry)."""
    return any(part == "qr=1" for part in query.split("&"))


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip('"')
    if value.startswith("["):
        value = value[1:value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def client_ip(peer: str, forwarded_for: str | None, forwarded: str | None,
              trusted: Sequence[Network]) -> str:
    """The client address: the peer, or, behind a trusted proxy, the nearest untrusted forwarded hop."""
    peer_ip = _parse_ip(peer)
    if peer_ip is None or not trusted or not any(peer_ip in net for net in trusted):
        return str(peer_ip) if peer_ip is not None else peer
    hops: list[str] = []
    if forwarded:
        # RFC 7239: Forwarded: for=192.0.2.43, for="[2001:db8::1]:4711";proto=https
        for element in forwarded.split(","):
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                if key.lower() == "for":
                    hops.append(value)
    elif forwarded_for:
        hops = forwarded_for.split(",")
    # Walk from the nearest hop outwards; the first address not one of our proxies is the client.
    for hop in reversed(hops):
        ip = _parse_ip(hop)
        if ip is None:
            break
        if not any(ip in net for net in trusted):
            return str(ip)
    return str(peer_ip)
