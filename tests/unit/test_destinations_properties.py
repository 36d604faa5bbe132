"""Properties of destination checking over generated text, URLs and numeric hosts in every form."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains

from clickwire.destinations import Blocklist, DestinationVerdict, Shorteners, check_destination, parse_ipv4_whatwg

BLOCKLIST = Blocklist(hosts=["evil.example.com", "203.0.113.66"])
SHORTENERS = Shorteners(hosts=["bit.ly", "t.co"])

# Ranges no link may point at, whatever spelling the host uses (RFC 6890 special-purpose registry).
# 192.0.0.0/29 rather than the registry's /24: Python before 3.11.10 / 3.12.4 (CVE-2024-4032) calls
# the rest of that /24 global, so the checker's verdict there depends on the interpreter's patch level.
PRIVATE_V4 = [
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
              "192.0.0.0/29", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4")
]
# Digits, hex letters and the dot as their fullwidth forms (U+FF10.., U+3002), which UTS46 folds back.
FULLWIDTH = {**{ord(c): ord(c) + 0xFEE0 for c in "0123456789abcdefxABCDEFX"}, ord("."): 0x3002}


def check(url: str) -> DestinationVerdict:
    return check_destination(url, BLOCKLIST, SHORTENERS)


def is_public_v4(address: ipaddress.IPv4Address) -> bool:
    """The oracle: outside every special-purpose range listed above and globally routable."""
    return address.is_global and not any(address in net for net in PRIVATE_V4)


def addresses_in(networks: list[ipaddress.IPv4Network]) -> st.SearchStrategy[ipaddress.IPv4Address]:
    return st.sampled_from(networks).flatmap(
        lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(ipaddress.IPv4Address)
    )


any_v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address) | addresses_in(PRIVATE_V4)


@st.composite
def numeric_spelling(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """address in a form browsers read as it: 1-4 parts, each decimal, octal or hex, maybe fullwidth."""
    parts = draw(st.integers(1, 4))
    value = int(address)
    # 1 part: the whole number; 2: a.(24 bits); 3: a.b.(16 bits); 4: a.b.c.d.
    head = [(value >> (8 * (3 - i))) & 0xFF for i in range(parts - 1)]
    last = value & ((1 << (8 * (5 - parts))) - 1)
    rendered = []
    for number in [*head, last]:
        style = draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
        if style == "dec":
            rendered.append(str(number))
        elif style == "oct":
            rendered.append("0" + format(number, "o"))
        else:
            text = hex(number)
            rendered.append(text.upper() if style == "HEX" else text)
    host = ".".join(rendered) + draw(st.sampled_from(["", "."]))
    return host.translate(FULLWIDTH) if draw(st.booleans()) else host


@st.composite
def embedded_v6(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """address inside an IPv6 literal: mapped, compatible, NAT64 or 6to4, as text in brackets."""
    v4 = int(address)
    form = draw(st.sampled_from(["mapped", "mapped_dotted", "compatible", "nat64", "6to4"]))
    if form == "mapped_dotted":
        return f"[::ffff:{address}]"
    value = {"mapped": (0xFFFF << 32) | v4, "compatible": v4, "nat64": (0x64FF9B << 96) | v4,
             "6to4": (0x2002 << 112) | (v4 << 80)}[form]
    return f"[{ipaddress.IPv6Address(value)}]"


# Mostly printable (or every URL would be refused for a stray control character), sometimes anything.
url_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Z"]), max_size=30) | st.text(
    max_size=10)
hosts = st.one_of(
    domains(),
    any_v4.flatmap(numeric_spelling),
    addresses_in(PRIVATE_V4).flatmap(embedded_v6),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.sampled_from(["evil.example.com", "sub.evil.example.com", "bit.ly", "localhost", "printer.local",
                     "xn--80ak6aa92e.com", "\u0430\u0440\u0440\u04cf\u0435.com", "bücher.de", "EXAMPLE.COM."]),
    url_text,
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    """URL-shaped text: a scheme, maybe userinfo, a host of any kind, maybe a port, path, query, fragment."""
    scheme = draw(st.sampled_from(["http", "https"]) | st.sampled_from(["HTTPS", "hTtP", "ftp", "javascript", ""]))
    userinfo = draw(st.sampled_from(["user", "user:pass", ":", "a%40b"])) if draw(st.integers(0, 4)) == 0 else None
    port = (draw(st.integers(0, 70000).map(str) | st.sampled_from(["", "80", "443", "x"]))
            if draw(st.integers(0, 3)) == 0 else None)
    url = f"{scheme}://{'' if userinfo is None else userinfo + '@'}{draw(hosts)}"
    url += "" if port is None else f":{port}"
    url += draw(st.sampled_from(["", "/"])) + draw(url_text)
    if draw(st.booleans()):
        url += "?" + draw(url_text)
    if draw(st.booleans()):
        url += "#" + draw(url_text)
    return url


def assert_safe(verdict: DestinationVerdict) -> None:
    """An accepted verdict's normalized URL is http(s), carries no userinfo and names no internal IP."""
    parts = urlsplit(verdict.normalized_url)
    assert parts.scheme in {"http", "https"}
    assert "@" not in parts.netloc
    host = parts.hostname
    assert host
    if parts.netloc.startswith("["):
        v6 = ipaddress.IPv6Address(host)
        embedded = v6.ipv4_mapped or v6.sixtofour or (
            ipaddress.IPv4Address(int(v6) & 0xFFFFFFFF) if v6 in ipaddress.IPv6Network("64:ff9b::/96") else None)
        assert v6.is_global
        assert not any((v6.is_multicast, v6.is_loopback, v6.is_link_local))
        assert embedded is None or is_public_v4(embedded)
        return
    numeric = parse_ipv4_whatwg(host)
    if numeric is not None:
        # A numeric host survives only as a public address in canonical dotted-quad form.
        assert host == str(numeric)
        assert is_public_v4(numeric)


# More examples than the default: only about one generated URL in ten gets past every refusal.
@settings(max_examples=300)
@given(st.text() | urls())
def test_never_raises_and_accepted_urls_are_safe(url: str) -> None:
    """Any text gets a verdict (no exception); ok exactly when there is no reason, and accepted means safe."""
    verdict = check(url)
    assert verdict.ok == (verdict.reason is None)
    assert 0 <= verdict.trust <= 100
    if verdict.ok:
        assert_safe(verdict)
    else:
        assert (verdict.trust, verdict.normalized_url) == (0, "")


@settings(max_examples=300)
@given(urls())
def test_rechecking_the_normalized_url_gives_the_same_verdict(url: str) -> None:
    """check(normalized_url) accepts it unchanged, with the same flags and trust (normalisation is a fixpoint)."""
    verdict = check(url)
    if verdict.ok:
        assert check(verdict.normalized_url) == verdict


@given(addresses_in(PRIVATE_V4).flatmap(lambda a: st.tuples(st.just(a), numeric_spelling(a))),
       st.sampled_from(["http", "https"]))
def test_internal_ipv4_is_refused_in_every_numeric_form(case: tuple[ipaddress.IPv4Address, str], scheme: str) -> None:
    """A loopback/private/reserved IPv4 address is refused as private_ip however its digits are spelled."""
    _, host = case
    assert check(f"{scheme}://{host}/").reason == "private_ip"


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).filter(is_public_v4)
       .flatmap(lambda a: st.tuples(st.just(a), numeric_spelling(a))))
def test_public_ipv4_in_any_numeric_form_normalizes_to_its_dotted_quad(
    case: tuple[ipaddress.IPv4Address, str],
) -> None:
    """A public IPv4 in any numeric spelling is accepted, flagged ip_literal, and written as a.b.c.d."""
    address, host = case
    verdict = check(f"https://{host}/p")
    assert verdict.ok, verdict
    assert "ip_literal" in verdict.flags
    assert verdict.normalized_url == f"https://{address}/p"


@given(addresses_in(PRIVATE_V4).flatmap(embedded_v6))
def test_internal_ipv4_inside_ipv6_is_refused(host: str) -> None:
    """An internal IPv4 wrapped in a mapped, compatible, NAT64 or 6to4 IPv6 literal is refused as private_ip."""
    assert check(f"http://{host}/").reason == "private_ip"


@pytest.mark.parametrize("userinfo", ["user@", "user:pass@", ":@", "@"])
@given(host=domains())
def test_userinfo_is_refused_before_any_host(userinfo: str, host: str) -> None:
    """Credentials in the authority are refused whatever the host, so no accepted URL carries them."""
    assert check(f"https://{userinfo}{host}/").reason == "credentials_in_url"
