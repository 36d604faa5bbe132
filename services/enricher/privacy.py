"""Privacy: the visitor hash (unique counts without identities) and how much of the IP is stored."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, get_args

IpMode = Literal["full", "truncated", "none"]
IP_MODES: tuple[str, ...] = get_args(IpMode)
_MS_PER_DAY = 86_400_000


def store_ip(ip: str, mode: IpMode) -> str:
    """Return the address as stored: unchanged, cut to its /24 (IPv4) or /48 (IPv6), or ''."""
    if mode == "none":
        return ""
    if mode == "full":
        return ip
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        # Whatever the redirector saw, an unparseable value may still identify someone.
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


class VisitorHasher:
    """Keyed BLAKE2b of (daily salt, ip, user agent, link id); the salt rotates at 00:00 UTC."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("visitor secret must be at least 16 bytes")
        self._secret = secret
        self.daily_salt = lru_cache(maxsize=4)(self._daily_salt)

    def __repr__(self) -> str:
        return "VisitorHasher(secret=***)"

    def _daily_salt(self, day: int) -> bytes:
        # Derived, not random, so every enricher process computes the same salt with no coordination.
        date = datetime.fromtimestamp(day * 86_400, tz=UTC).date().isoformat()
        return hashlib.blake2b(
            f"clickwire visitor salt {date}".encode(), key=self._secret[:64], digest_size=32
        ).digest()

    def visitor_hash(self, ip: str, user_agent: str, link_id: str, ts_ms: int) -> str:
        """Return a 32-hex-char hash, equal for the same visitor and link on the same UTC day only."""
        # The click's own day, not the enricher's clock: a replay next week yields the same hash.
        salt = self.daily_salt(ts_ms // _MS_PER_DAY)
        msg = "\x00".join((ip, user_agent, link_id)).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(msg, key=salt, digest_size=16).hexdigest()
