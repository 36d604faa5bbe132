"""SSRF guard: which webhook URLs and resolved addresses the dispatcher may connect to.

Two gates: ``vet_url`` checks the URL itself (scheme, credentials, port, literal addresses in any
numeric form a resolver would accept), and ``resolve_and_vet`` resolves a host name once and refuses
the lot if any address is internal. The transport connects only to the addresses it returned.

``SSRFError.reason`` codes: ``invalid_url``, ``scheme``, ``credentials``, ``port``, ``invalid_host``,
``internal_name``, ``dns_failure``, ``no_address``, and for addresses the category from
data/blocked_networks.txt: ``metadata``, ``loopback``, ``private``, ``link_local``, ``cgnat``,
``multicast``, ``broadcast``, ``reserved``, ``unspecified``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

BLOCKLIST_PATH = Path(__file__).parent / "data" / "blocked_networks.txt"
ALLOWED_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 6761 reserves localhost; .internal is ICANN's private-use TLD (metadata.google.internal lives there).
_INTERNAL_SUFFIXES = ("localhost", ".localhost", ".internal")
_HOST_CHARS = re.compile(r"^[a-z0-9_.-]+$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class SSRFError(Exception):
    """A destination the dispatcher refuses to reach; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class VettedTarget:
    """A URL that passed the static checks; ``ip`` is set when the host was an address literal."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None


@lru_cache(maxsize=1)
def blocked_networks() -> tuple[tuple[IPNetwork, str], ...]:
    """Return the (network, reason) pairs of data/blocked_networks.txt in file order."""
    entries: list[tuple[IPNetwork, str]] = []
    for raw in BLOCKLIST_PATH.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cidr, reason = line.split()
        entries.append((ipaddress.ip_network(cidr), reason))
    return tuple(entries)


def parse_allow_nets(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Return networks from CIDR strings (the dev/test allow-list), raising ValueError on a bad one."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [server, client]
    if ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def address_block_reason(ip: IPAddress, allow_nets: Collection[IPNetwork] = ()) -> str | None:
    """Return why ``ip`` may not be reached (a reason code), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
    reason: str | None = None
    for net, why in blocked_networks():
        if ip.version == net.version and ip in net:
            reason = why
            break
    if reason == "metadata":
        return reason  # never reachable, not even through the dev allow-list
    if isinstance(ip, ipaddress.IPv6Address) and reason is None:
        embedded = _embedded_v4(ip)
        if embedded:
            for inner in embedded:
                inner_reason = address_block_reason(inner, allow_nets)
                if inner_reason is not None:
                    return inner_reason
            return None
    if reason is None and not ip.is_global:
        reason = "reserved"  # anything the registry calls non-global that our list has not named yet
    if reason is not None and any(ip.version == n.version and ip in n for n in allow_nets):
        return None
    return reason


def _parse_ipv4_number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if digits == "":
            return 0  # inet_aton and WHATWG both read a bare "0x" as zero
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    try:
        return int(digits, base) if digits.isascii() and digits.isalnum() else None
    except ValueError:
        return None


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in last[2:])


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address inet_aton would read from ``host``: 127.1, 0x7f.1, 0177.0.0.1, 2130706433.

    Returns None for a host name; raises SSRFError("invalid_host") for a host that ends in a number but
    is not a valid address, which WHATWG URL parsing rejects and a resolver might read differently.
    """
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]  # one trailing dot is allowed on an address, as in WHATWG's IPv4 parser
    if not labels or not _ends_in_number(labels):
        return None
    if len(labels) > 4:
        raise SSRFError("invalid_host", host)
    numbers = [_parse_ipv4_number(p) if p else None for p in labels]
    if any(n is None for n in numbers):
        raise SSRFError("invalid_host", host)
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise SSRFError("invalid_host", host)
    packed = last
    for i, v in enumerate(head):
        packed += v << (8 * (3 - i))
    return ipaddress.IPv4Address(packed)


def normalize_host(host: str) -> tuple[str, IPAddress | None]:
    """Return (canonical host, address if the host is an address literal in any accepted form)."""
    if not host:
        raise SSRFError("invalid_url", "no host")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise SSRFError("invalid_host", host) from exc
        return ip6.compressed, ip6
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise SSRFError("invalid_host", "not a valid IDN") from exc
    host = host.lower()
    if not _HOST_CHARS.match(host):
        raise SSRFError("invalid_host", host)
    ip4 = parse_ipv4_loose(host)
    if ip4 is not None:
        return str(ip4), ip4
    return host.rstrip("."), None


def vet_url(
    url: str,
    *,
    allow_nets: Collection[IPNetwork] = (),
    allowed_ports: Collection[int] | None = None,
) -> VettedTarget:
    """Return the URL's canonical target if it may be delivered to, else raise SSRFError.

    Host names are only checked by name here; their addresses are vetted by ``resolve_and_vet`` at
    connection time. ``allowed_ports`` None allows any port.
    """
    try:
        parts = urlsplit(url.strip())
        port_text = parts.port
    except ValueError as exc:
        raise SSRFError("invalid_url", str(exc)) from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise SSRFError("scheme", scheme or "none")
    if "@" in parts.netloc:
        raise SSRFError("credentials")
    netloc = parts.netloc
    host_in_url = netloc[: netloc.find("]") + 1] if netloc.startswith("[") else netloc.partition(":")[0]
    host, ip = normalize_host(host_in_url)
    port = port_text if port_text is not None else _DEFAULT_PORTS[scheme]
    if port == 0 or (allowed_ports is not None and port not in allowed_ports):
        raise SSRFError("port", str(port))
    if ip is not None:
        reason = address_block_reason(ip, allow_nets)
        if reason is not None:
            raise SSRFError(reason, str(ip))
    elif host == "" or host.endswith(_INTERNAL_SUFFIXES) or host in _INTERNAL_SUFFIXES:
        raise SSRFError("internal_name" if host else "invalid_url", host)
    netloc_host = f"[{host}]" if ":" in host else host
    netloc = netloc_host if port_text is None else f"{netloc_host}:{port}"
    canonical = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return VettedTarget(url=canonical, scheme=scheme, host=host, port=port, ip=ip)


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the event loop's getaddrinfo (libc, in a thread) and return address strings."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def resolve_and_vet(
    host: str,
    port: int,
    *,
    allow_nets: Collection[IPNetwork] = (),
    resolver: Resolver | None = None,
) -> list[IPAddress]:
    """Return the addresses to connect to for ``host``, refusing all of them if any one is internal."""
    name, literal = normalize_host(host)
    if literal is not None:
        candidates: list[IPAddress] = [literal]
    else:
        if name.endswith(_INTERNAL_SUFFIXES) or name in _INTERNAL_SUFFIXES:
            raise SSRFError("internal_name", name)
        try:
            answers = await (resolver or system_resolver)(name, port)
        except (OSError, UnicodeError) as exc:
            raise SSRFError("dns_failure", f"{name}: {exc}") from exc
        candidates = []
        for text in answers:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            if ip not in candidates:
                candidates.append(ip)
    if not candidates:
        raise SSRFError("no_address", name)
    for ip in candidates:
        # One bad answer refuses the lot: a rebinding attacker mixes a public and an internal address.
        reason = address_block_reason(ip, allow_nets)
        if reason is not None:
            raise SSRFError(reason, f"{name} -> {ip}")
    return candidates
