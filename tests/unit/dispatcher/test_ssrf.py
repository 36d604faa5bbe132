"""SSRF guard: URL checks, numeric host forms as libc reads them, and vetting of resolved addresses."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dispatcher.ssrf import (
    SSRFError,
    address_block_reason,
    parse_allow_nets,
    parse_ipv4_loose,
    resolve_and_vet,
    vet_url,
)

LOOPBACK_ONLY = parse_allow_nets(["127.0.0.0/8"])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://example.com:99999/", "invalid_url"),
        ("http://example.com:0/", "port"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://127.0.0.1./", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://localhost/", "internal_name"),
        ("http://api.localhost/", "internal_name"),
        ("http://metadata.google.internal/", "internal_name"),
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd12::1]/", "private"),
        ("http://169.254.1.1/", "link_local"),
        ("http://[fe80::1]/", "link_local"),
        ("http://100.64.0.1/", "cgnat"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://192.0.2.1/", "reserved"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://168.63.129.16/", "metadata"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://[64:ff9b::10.0.0.1]/", "private"),
        ("http://[2002:c0a8:0101::1]/", "private"),
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback"),  # Teredo client 127.0.0.1
        ("http://[::127.0.0.1]/", "reserved"),
        ("http://1.2.3.4.5/", "invalid_host"),
        ("http://08.0.0.1/", "invalid_host"),
        ("http://256.0.0.1/", "invalid_host"),
        ("http://exa mple.com/", "invalid_host"),
    ],
)
def test_vet_url_refuses(url: str, reason: str) -> None:
    """Each unsafe URL is refused with its machine-readable reason."""
    with pytest.raises(SSRFError) as err:
        vet_url(url)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("url", "host", "port", "canonical"),
    [
        ("https://hooks.example.com/in?x=1", "hooks.example.com", 443, "https://hooks.example.com/in?x=1"),
        ("HTTP://Hooks.Example.COM:8080", "hooks.example.com", 8080, "http://hooks.example.com:8080/"),
        ("https://bücher.de/x", "xn--bcher-kva.de", 443, "https://xn--bcher-kva.de/x"),
        ("http://8.8.8.8/", "8.8.8.8", 80, "http://8.8.8.8/"),
        ("http://134744072/", "8.8.8.8", 80, "http://8.8.8.8/"),
        ("http://[::ffff:8.8.8.8]/", "::ffff:808:808", 80, "http://[::ffff:808:808]/"),
        ("http://[2606:4700::1111]:8443/", "2606:4700::1111", 8443, "http://[2606:4700::1111]:8443/"),
    ],
)
def test_vet_url_accepts_and_normalises(url: str, host: str, port: int, canonical: str) -> None:
    """Public targets pass, with host and URL written canonically (lower case, IDNA, dotted quad)."""
    target = vet_url(url)
    assert (target.host, target.port, target.url) == (host, port, canonical)


def test_allowed_ports_restrict() -> None:
    """With allowed_ports set, any other port is refused and a listed one passes."""
    assert vet_url("https://example.com/", allowed_ports={443}).port == 443
    with pytest.raises(SSRFError) as err:
        vet_url("https://example.com:8443/", allowed_ports={443})
    assert err.value.reason == "port"


def test_allow_list_opens_loopback_but_never_metadata() -> None:
    """The dev allow-list lets 127.0.0.0/8 through, yet metadata stays refused even when listed."""
    assert vet_url("http://127.0.0.1:9/", allow_nets=LOOPBACK_ONLY).ip == ipaddress.ip_address("127.0.0.1")
    with pytest.raises(SSRFError) as err:
        vet_url("http://169.254.169.254/", allow_nets=parse_allow_nets(["169.254.0.0/16"]))
    assert err.value.reason == "metadata"


def test_public_embedded_ipv4_passes() -> None:
    """IPv6 forms embedding a public IPv4 (mapped, NAT64, 6to4) are not refused for their form alone."""
    for text in ("::ffff:1.1.1.1", "64:ff9b::1.1.1.1", "2002:0101:0101::1"):
        assert address_block_reason(ipaddress.IPv6Address(text)) is None


def _render(value: int, style: str) -> str:
    return {"dec": str(value), "oct": "0" + format(value, "o"), "hex": hex(value)}[style]


@st.composite
def numeric_hosts(draw: st.DrawFn) -> str:
    """IPv4 hosts in the forms inet_aton accepts: 1-4 parts, each decimal, octal or hex."""
    parts = draw(st.integers(min_value=1, max_value=4))
    head = [draw(st.integers(0, 255)) for _ in range(parts - 1)]
    last = draw(st.integers(0, 256 ** (5 - parts) - 1))
    styles = [draw(st.sampled_from(["dec", "oct", "hex"])) for _ in range(parts)]
    return ".".join(_render(v, s) for v, s in zip([*head, last], styles, strict=True))


@given(numeric_hosts())
def test_numeric_forms_read_like_libc(host: str) -> None:
    """parse_ipv4_loose reads every numeric host form to the address libc's inet_aton gives."""
    assert parse_ipv4_loose(host) == ipaddress.IPv4Address(socket.inet_aton(host))


def _resolver(answers: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


async def test_resolve_and_vet_returns_public_addresses() -> None:
    """A name resolving to public addresses yields them, deduplicated, in resolver order."""
    resolver = _resolver({"hooks.example.com": ["93.184.215.14", "2606:2800:21f::1", "93.184.215.14"]})
    got = await resolve_and_vet("hooks.example.com", 443, resolver=resolver)
    assert got == [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("2606:2800:21f::1")]


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["93.184.215.14", "10.0.0.5"], "private"),
        (["127.0.0.1"], "loopback"),
        (["::ffff:127.0.0.1"], "loopback"),
        (["169.254.169.254"], "metadata"),
        ([], "no_address"),
    ],
)
async def test_resolve_and_vet_refuses_any_internal_answer(answers: list[str], reason: str) -> None:
    """One internal address among the answers refuses the whole name (rebinding mixes them)."""
    with pytest.raises(SSRFError) as err:
        await resolve_and_vet("rebind.example", 80, resolver=_resolver({"rebind.example": answers}))
    assert err.value.reason == reason


async def test_resolve_failure_is_dns_failure() -> None:
    """A resolver error becomes SSRFError('dns_failure')."""
    with pytest.raises(SSRFError) as err:
        await resolve_and_vet("nowhere.example", 80, resolver=_resolver({}))
    assert err.value.reason == "dns_failure"


async def test_numeric_host_is_not_resolved() -> None:
    """A numeric host is vetted as an address without asking the resolver."""
    with pytest.raises(SSRFError) as err:
        await resolve_and_vet("0x7f.1", 80, resolver=_resolver({}))
    assert err.value.reason == "loopback"
    assert await resolve_and_vet("0x7f.1", 80, allow_nets=LOOPBACK_ONLY, resolver=_resolver({})) == [
        ipaddress.ip_address("127.0.0.1")
    ]
