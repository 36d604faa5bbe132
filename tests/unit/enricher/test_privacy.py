"""IP storage modes and the daily-rotating visitor hash."""

from __future__ import annotations

import pytest

from services.enricher.privacy import VisitorHasher, store_ip

DAY_MS = 86_400_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("ip", "mode", "stored"),
    [
        ("203.0.113.77", "full", "203.0.113.77"),
        ("203.0.113.77", "truncated", "203.0.113.0"),
        ("2001:db8:abcd:12:3456::1", "truncated", "2001:db8:abcd::"),
        ("::ffff:203.0.113.77", "truncated", "203.0.113.0"),
        ("203.0.113.77", "none", ""),
        ("not-an-ip", "truncated", ""),
    ],
)
def test_store_ip_modes(ip: str, mode: str, stored: str) -> None:
    """full keeps, truncated keeps /24 or /48, none and unparseable store nothing."""
    assert store_ip(ip, mode) == stored  # type: ignore[arg-type]


def test_hash_is_stable_within_a_utc_day_and_across_processes() -> None:
    """Two hashers with the same secret agree, and one visitor hashes equal all day."""
    a, b = VisitorHasher(b"s" * 32), VisitorHasher(b"s" * 32)
    day_start = T0 - T0 % DAY_MS
    assert a.visitor_hash("1.2.3.4", "ua", "l", day_start) == b.visitor_hash(
        "1.2.3.4", "ua", "l", day_start + DAY_MS - 1
    )


def test_hash_rotates_at_utc_midnight() -> None:
    """The same visitor hashes differently on the next UTC day."""
    h = VisitorHasher(b"s" * 32)
    day_start = T0 - T0 % DAY_MS
    assert h.visitor_hash("1.2.3.4", "ua", "l", day_start - 1) != h.visitor_hash(
        "1.2.3.4", "ua", "l", day_start
    )


@pytest.mark.parametrize("changed", ["ip", "ua", "link", "secret"])
def test_hash_depends_on_every_input(changed: str) -> None:
    """Changing ip, user agent, link or secret changes the hash."""
    base = VisitorHasher(b"s" * 32).visitor_hash("1.2.3.4", "ua", "l", T0)
    hasher = VisitorHasher(b"t" * 32 if changed == "secret" else b"s" * 32)
    other = hasher.visitor_hash(
        "1.2.3.5" if changed == "ip" else "1.2.3.4",
        "ua2" if changed == "ua" else "ua",
        "l2" if changed == "link" else "l",
        T0,
    )
    assert other != base
    assert len(base) == 32


def test_field_boundaries_are_unambiguous() -> None:
    """("1.2.3.4", "ab") and ("1.2.3.4a", "b") do not collide."""
    h = VisitorHasher(b"s" * 32)
    assert h.visitor_hash("1.2.3.4", "ab", "l", T0) != h.visitor_hash("1.2.3.4a", "b", "l", T0)


def test_secret_is_not_printed_and_must_be_long_enough() -> None:
    """repr hides the secret; a short secret is refused."""
    assert "sss" not in repr(VisitorHasher(b"s" * 32))
    with pytest.raises(ValueError, match="16 bytes"):
        VisitorHasher(b"short")
