"""Privacy: the visitor hash (unique counts without identities) and how much of the IP is stored."""

from __future__ import annotations

import hashlib
import socket
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, get_args

IpMode = Literal["full", "truncated", "none"]
IP_MODES: tuple[str, ...] = get_args(IpMode)
_MS_PER_DAY = 86_400_000
_V4_MAPPED = bytes(10) + b"\xff\xff"


def store_ip(ip: str, mode: IpMode) -> str:
    """Return the address as stored: unchanged, cut to its /24 (IPv4) or /48 (IPv6), or ''."""
    if mode == "none":
        return ""
    if mode == "full":
        return ip
    # inet_pton rather than ipaddress: strict parsing at a tenth of the cost, on the hot path.
    ip = ip.strip()
    try:
        packed = socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
        except OSError:
            # Whatever the redirector saw, an unparseable value may still identify someone.
            return ""
        if packed[:12] == _V4_MAPPED:
            packed = packed[12:]
        else:
            return socket.inet_ntop(socket.AF_INET6, packed[:6] + bytes(10))
    return socket.inet_ntop(socket.AF_INET, packed[:3] + b"\x00")


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
