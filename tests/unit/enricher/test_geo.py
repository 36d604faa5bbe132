"""Geo lookups: geoip2fast data, optional .mmdb overlay, and silence on non-public addresses."""

from __future__ import annotations

from typing import Any

import pytest

from services.enricher.bots import load_networks
from services.enricher.geo import EMPTY_GEO, GeoLocator, public_address


@pytest.fixture(scope="module")
def locator() -> GeoLocator:
    return GeoLocator(org_asns=load_networks().org_asns)


def test_public_ipv4_gets_country_org_and_listed_asn(locator: GeoLocator) -> None:
    """A Google DNS address resolves to US, AS org GOOGLE, and ASN 15169 from asns.toml."""
    geo = locator.lookup("8.8.8.8")
    assert (geo.country, geo.as_org, geo.asn) == ("US", "GOOGLE", 15169)


def test_unlisted_org_keeps_asn_zero(locator: GeoLocator) -> None:
    """An organisation missing from asns.toml is named but its ASN stays 0 (geoip2fast has no numbers)."""
    geo = locator.lookup("81.2.69.142")
    assert geo.country == "GB"
    assert geo.as_org != ""
    assert geo.asn == 0


def test_ipv6_is_looked_up(locator: GeoLocator) -> None:
    """IPv6 addresses resolve through the IPv6 part of the shipped data."""
    geo = locator.lookup("2a03:2880:f12f:83:face:b00c:0:25de")
    assert geo.as_org == "FACEBOOK"
    assert len(geo.country) == 2


def test_ipv4_mapped_ipv6_is_treated_as_ipv4(locator: GeoLocator) -> None:
    """::ffff:8.8.8.8 gives the same answer as 8.8.8.8."""
    assert locator.lookup("::ffff:8.8.8.8") == locator.lookup("8.8.8.8")


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "127.0.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "2001:db8::1",
        "",
        "nope",
        "1.2.3",
    ],
)
def test_non_public_or_invalid_addresses_give_empty_geo(locator: GeoLocator, ip: str) -> None:
    """Private, reserved, documentation and malformed addresses give EMPTY_GEO instead of raising."""
    assert locator.lookup(ip) == EMPTY_GEO


def test_public_address_canonicalises() -> None:
    """public_address strips whitespace and compresses IPv6."""
    assert public_address(" 2001:4860:4860:0:0:0:0:8888 ") == "2001:4860:4860::8888"


class FakeMmdb:
    """Stands in for maxminddb.Reader: maxminddb has no writer to build a real file in a test."""

    def __init__(self, records: dict[str, Any]) -> None:
        self.records = records
        self.calls: list[str] = []

    def get(self, ip_address: str, /) -> Any:
        self.calls.append(ip_address)
        return self.records.get(ip_address)


def test_mmdb_record_adds_city_region_coordinates_and_asn() -> None:
    """A GeoLite2-City+ASN style record overlays city, region, coordinates and the exact ASN."""
    mmdb = FakeMmdb(
        {
            "81.2.69.142": {
                "country": {"iso_code": "GB"},
                "city": {"names": {"en": "London", "de": "London"}},
                "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
                "location": {"latitude": 51.5142, "longitude": -0.0931},
                "autonomous_system_number": 20712,
                "autonomous_system_organization": "Andrews & Arnold Ltd",
            }
        }
    )
    geo = GeoLocator(mmdb=mmdb).lookup("81.2.69.142")
    assert (geo.city, geo.region, geo.latitude, geo.longitude) == ("London", "England", 51.5142, -0.0931)
    assert geo.asn == 20712


def test_mmdb_miss_keeps_geoip2fast_answer_and_private_ips_skip_the_reader() -> None:
    """No mmdb record leaves the geoip2fast fields; private addresses never reach the reader."""
    mmdb = FakeMmdb({})
    locator = GeoLocator(mmdb=mmdb)
    geo = locator.lookup("8.8.8.8")
    locator.lookup("10.0.0.1")
    assert (geo.country, geo.city, geo.latitude) == ("US", "", None)
    assert mmdb.calls == ["8.8.8.8"]


def test_lookups_are_cached() -> None:
    """A repeated address is answered from the cache, not the reader."""
    mmdb = FakeMmdb({})
    locator = GeoLocator(mmdb=mmdb)
    locator.lookup("8.8.4.4")
    locator.lookup("8.8.4.4")
    assert mmdb.calls == ["8.8.4.4"]
