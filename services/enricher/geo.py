"""Geo enrichment: country, ASN and AS organisation from geoip2fast's shipped data; region, city and
coordinates (and an exact ASN) from a MaxMind .mmdb when CLICKWIRE_GEOIP_MMDB points to one.

Private, reserved and malformed addresses give EMPTY_GEO, never an exception.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Protocol

import maxminddb
from geoip2fast import GeoIP2Fast

# Country + ASN, IPv4 + IPv6: the richest file geoip2fast ships (the others are subsets of it).
GEOIP2FAST_FILE = "geoip2fast-asn-ipv6.dat.gz"
# geoip2fast's placeholders for "no answer"; never let them leak into a record.
_NO_COUNTRY = frozenset({"", "--"})
_NO_ORG = frozenset({"", "<unknown>", "IANA.ORG"})


@dataclass(frozen=True, slots=True)
class Geo:
    """Where an address is, as far as the data knows; empty strings / None / 0 when unknown."""

    country: str = ""
    region: str = ""
    city: str = ""
    latitude: float | None = None
    longitude: float | None = None
    asn: int = 0
    as_org: str = ""


EMPTY_GEO = Geo()


class MmdbReader(Protocol):
    """The part of maxminddb.Reader the locator uses (a fake in tests)."""

    def get(self, ip_address: str, /) -> Any:
        """Return the record for the address, or None."""


@cache
def geoip2fast() -> GeoIP2Fast:
    """Return the process-wide geoip2fast instance, loading its data once (~0.5 s, ~100 MB)."""
    # geoip2fast keeps its tables in module globals, so a second instance would replace the first
    # one's data: one instance per process is the only safe use.
    return GeoIP2Fast(geoip2fast_data_file=GEOIP2FAST_FILE)


def public_address(ip: str) -> str | None:
    """Return the canonical text of a globally routable address, None for anything else."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if not addr.is_global:
        return None
    return str(addr)


class GeoLocator:
    """Looks addresses up in geoip2fast (and an optional .mmdb), with an LRU cache per address."""

    def __init__(
        self,
        *,
        mmdb: MmdbReader | None = None,
        org_asns: Mapping[str, int] | None = None,
        cache_size: int = 65_536,
    ) -> None:
        self._g2f = geoip2fast()
        self._mmdb = mmdb
        # geoip2fast knows AS organisation names but not numbers; this fills the number for the
        # organisations our data files list (see data/asns.toml).
        self._org_asns = dict(org_asns or {})
        self.lookup: Callable[[str], Geo] = lru_cache(maxsize=cache_size)(self._lookup)

    @classmethod
    def from_mmdb_path(cls, path: str | None, *, org_asns: Mapping[str, int] | None = None) -> GeoLocator:
        """Build a locator that also reads the MaxMind database at `path` (None: geoip2fast only)."""
        mmdb: MmdbReader | None = None
        if path:
            mmdb = maxminddb.open_database(path)
        return cls(mmdb=mmdb, org_asns=org_asns)

    def _lookup(self, ip: str) -> Geo:
        addr = public_address(ip)
        if addr is None:
            return EMPTY_GEO
        found = self._g2f.lookup(addr)
        country = "" if found.country_code in _NO_COUNTRY else str(found.country_code)
        as_org = "" if found.asn_name in _NO_ORG else str(found.asn_name)
        geo = Geo(country=country, asn=self._org_asns.get(as_org, 0), as_org=as_org)
        if self._mmdb is not None:
            geo = _merge_mmdb(geo, self._mmdb.get(addr))
        return geo


def _name(node: Any) -> str:
    if not isinstance(node, Mapping):
        return ""
    names = node.get("names")
    if isinstance(names, Mapping) and isinstance(names.get("en"), str):
        return str(names["en"])
    code = node.get("iso_code")
    return code if isinstance(code, str) else ""


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _merge_mmdb(geo: Geo, record: Any) -> Geo:
    """Overlay what a City/ASN .mmdb record knows onto the geoip2fast answer."""
    if not isinstance(record, Mapping):
        return geo
    country_node = record.get("country")
    country = country_node.get("iso_code") if isinstance(country_node, Mapping) else None
    subdivisions = record.get("subdivisions")
    region = _name(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else ""
    location = record.get("location")
    location = location if isinstance(location, Mapping) else {}
    asn = record.get("autonomous_system_number")
    as_org = record.get("autonomous_system_organization")
    return Geo(
        country=country if isinstance(country, str) and country else geo.country,
        region=region,
        city=_name(record.get("city")),
        latitude=_float(location.get("latitude")),
        longitude=_float(location.get("longitude")),
        asn=asn if isinstance(asn, int) and asn > 0 else geo.asn,
        as_org=as_org if isinstance(as_org, str) and as_org else geo.as_org,
    )
