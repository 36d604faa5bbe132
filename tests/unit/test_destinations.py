"""Destination safety: refusals, normalisation, flags, trust and reloadable host lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clickwire.destinations import (
    DEFAULT_BLOCKLIST_PATH,
    DEFAULT_SHORTENERS_PATH,
    Blocklist,
    DestinationVerdict,
    HostList,
    Shorteners,
    check_destination,
    parse_ipv4_whatwg,
)

BLOCKLIST = Blocklist(
    hosts=["evil.example.com", "phish.test-domain.net", "203.0.113.66", "b\u00fccher-fake.de"]
)
SHORTENERS = Shorteners(hosts=["bit.ly", "t.co"])


def check(url: str) -> DestinationVerdict:
    return check_destination(url, BLOCKLIST, SHORTENERS)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "scheme_not_allowed"),
        ("data:text/html,<script>alert(1)</script>", "scheme_not_allowed"),
        ("ftp://files.example.com/a", "scheme_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("//example.com/path", "scheme_not_allowed"),
        ("https://user:pass@example.com/", "credentials_in_url"),
        ("https://user@example.com/", "credentials_in_url"),
        ("https://example.com@evil.example.org/", "credentials_in_url"),
        ("http://good.example.com\\@evil.example.org/", "invalid_url"),
        ("https://exa mple.com/", "invalid_url"),
        ("ht\ttps://example.com/", "invalid_url"),
        ("https://example.com/\npath", "invalid_url"),
        ("https:///path-only", "invalid_url"),
        ("https://example.com/" + "a" * 2100, "url_too_long"),
        ("https://example.com:99999/", "invalid_port"),
        ("https://example.com:0/", "invalid_port"),
        ("https://example.com:/", "invalid_port"),
        ("http://127.0.0.1/", "private_ip"),
        ("http://10.1.2.3/", "private_ip"),
        ("http://172.16.0.1/", "private_ip"),
        ("http://192.168.1.1:8080/", "private_ip"),
        ("http://192.0.0.8/", "private_ip"),  # RFC 6890 protocol assignments, on every Python patch version
        ("http://3221225480/", "private_ip"),
        ("http://169.254.169.254/latest/meta-data", "private_ip"),
        ("http://100.64.0.1/", "private_ip"),
        ("http://0.0.0.0/", "private_ip"),
        ("http://0/", "private_ip"),
        ("http://224.0.0.251/", "private_ip"),
        ("http://240.0.0.1/", "private_ip"),
        ("http://255.255.255.255/", "private_ip"),
        ("http://2130706433/", "private_ip"),
        ("http://0x7f000001/", "private_ip"),
        ("http://0x7f.1/", "private_ip"),
        ("http://0177.0.0.1/", "private_ip"),
        ("http://127.1/", "private_ip"),
        ("http://127.0.0.1./", "private_ip"),
        ("http://[::1]/", "private_ip"),
        ("http://[::]/", "private_ip"),
        ("http://[fe80::1]/", "private_ip"),
        ("http://[fc00::1]/", "private_ip"),
        ("http://[ff02::1]/", "private_ip"),
        ("http://[::ffff:127.0.0.1]/", "private_ip"),
        ("http://[::ffff:a9fe:a9fe]/", "private_ip"),
        ("http://[64:ff9b::a00:1]/", "private_ip"),
        ("http://[2002:c0a8:101::1]/", "private_ip"),
        ("http://[2001:db8::1]/", "private_ip"),
        ("http://999.1.1.1/", "invalid_host"),
        ("http://1.2.3.4.5/", "invalid_host"),
        ("http://0x1g.1/", "invalid_host"),
        ("http://%31%32%37.0.0.1/", "invalid_host"),
        ("http://[not-an-ip]/", "invalid_url"),
        ("https://localhost/", "private_host"),
        ("https://api.localhost/", "private_host"),
        ("https://printer.local/", "private_host"),
        ("https://db.internal/", "private_host"),
        ("https://intranet/", "private_host"),
        ("https://router.home.arpa/", "private_host"),
        ("https://xn--zz.com/", "idna_invalid"),
        ("https://-lead.example.com/", "idna_invalid"),
        ("https://a..b.com/", "idna_invalid"),
        ("https://" + "a" * 64 + ".com/", "idna_invalid"),
        ("https://\u2488.com/", "idna_invalid"),  # "⒈": UTS46 maps it to "1." -> empty label
        ("https://evil.example.com/login", "blocklisted"),
        ("https://login.EVIL.example.com./x", "blocklisted"),
        ("https://phish.test-domain.net/", "blocklisted"),
        ("http://203.0.113.66/", "private_ip"),
        ("https://b\u00fccher-fake.de/", "blocklisted"),
        ("https://xn--bcher-fake-9db.de/", "blocklisted"),
    ],
)
def test_unsafe_destinations_are_refused_with_their_reason(url: str, reason: str) -> None:
    """Each unsafe URL variant is refused with the machine-readable reason for it, and trust 0."""
    verdict = check(url)
    assert (verdict.ok, verdict.reason, verdict.trust) == (False, reason, 0)


@pytest.mark.parametrize(
    ("url", "normalized", "flags"),
    [
        ("https://example.com/a?b=c#d", "https://example.com/a?b=c#d", []),
        ("  HTTPS://Example.COM  ", "https://example.com/", []),
        ("https://example.com.:443/x", "https://example.com/x", []),
        ("http://example.com:80/", "http://example.com/", ["insecure_scheme"]),
        ("https://example.com:8443/", "https://example.com:8443/", ["nonstandard_port"]),
        ("https://my_site.example.com/", "https://my_site.example.com/", []),
        ("https://b\u00fccher.de/\u00fc?q=\u00e9", "https://xn--bcher-kva.de/%C3%BC?q=%C3%A9", ["punycode"]),
        ("https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/", "https://example.com/", []),
        ("https://bit.ly/abc", "https://bit.ly/abc", ["shortener"]),
        ("https://www.t.co/abc", "https://www.t.co/abc", ["shortener"]),
        ("https://8.8.8.8/", "https://8.8.8.8/", ["ip_literal"]),
        ("https://134744072/", "https://8.8.8.8/", ["ip_literal"]),
        ("https://[2606:4700:4700::1111]/", "https://[2606:4700:4700::1111]/", ["ip_literal"]),
        ("https://\u0430pple.com/", "https://xn--pple-43d.com/", ["punycode", "mixed_script"]),
        (
            "https://\u0430\u0440\u0440\u04cf\u0435.com/",
            "https://xn--80ak6aa92e.com/",
            ["punycode", "lookalike"],
        ),
        ("https://xn--80ak6aa92e.com/", "https://xn--80ak6aa92e.com/", ["punycode", "lookalike"]),
        (
            "https://\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444/",
            "https://xn--e1afmkfd.xn--p1ai/",
            ["punycode"],
        ),
        ("https://\u65e5\u672c\u8a9e.jp/", "https://xn--wgv71a119e.jp/", ["punycode"]),
        ("https://sony\u30b9\u30c8\u30a2.jp/", "https://xn--sony-ok4c7e7d.jp/", ["punycode"]),
    ],
)
def test_acceptable_destinations_are_normalized_and_flagged(
    url: str, normalized: str, flags: list[str]
) -> None:
    """Acceptable URLs come back normalised (lower-case ASCII host, default port dropped) with their flags."""
    verdict = check(url)
    assert verdict.ok
    assert verdict.reason is None
    assert verdict.normalized_url == normalized
    assert verdict.flags == flags


def test_trust_falls_with_each_flag() -> None:
    """No flag means trust 100; look-alikes score lower than a plain IDN, which scores lower than ASCII."""
    plain, idn, lookalike = (
        check(u).trust for u in ("https://example.com/", "https://b\u00fccher.de/", "https://\u0430pple.com/")
    )
    assert plain == 100
    assert lookalike < idn < plain


def test_whatwg_ipv4_parser_matches_browsers() -> None:
    """Numeric hosts parse the way browsers parse them; names that merely contain digits are not IPs."""
    assert str(parse_ipv4_whatwg("0xC0.0250.1")) == "192.168.0.1"
    assert str(parse_ipv4_whatwg("3232235777")) == "192.168.1.1"
    assert parse_ipv4_whatwg("1.example") is None
    assert parse_ipv4_whatwg("example.com") is None
    with pytest.raises(ValueError, match="out of range"):
        parse_ipv4_whatwg("1.256.1.1")


def test_blocklist_matches_subdomains_but_not_lookalike_suffixes() -> None:
    """An entry blocks itself and its subdomains, not hosts that merely end with the same letters."""
    assert BLOCKLIST.match("a.b.evil.example.com") == "evil.example.com"
    assert BLOCKLIST.match("notevil.example.com") is None
    assert check("https://notevil.example.com/").ok


def test_blocklist_reloads_when_the_file_changes(tmp_path: Path) -> None:
    """reload() is a no-op while the file is unchanged and picks up edits (even same-second ones)."""
    path = tmp_path / "blocklist.txt"
    path.write_text("one.example  # source: test\n")
    blocklist = Blocklist(path)
    assert not blocklist.reload()
    assert check_destination("https://two.example.org/", blocklist, SHORTENERS).ok

    path.write_text("one.example  # source: test\ntwo.example.org  # source: test\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # keep mtime: size must still tell
    assert blocklist.reload()
    assert check_destination("https://two.example.org/", blocklist, SHORTENERS).reason == "blocklisted"
    assert not blocklist.reload()


def test_blocklist_keeps_old_entries_when_file_disappears(tmp_path: Path) -> None:
    """A deleted blocklist file does not empty the loaded list."""
    path = tmp_path / "blocklist.txt"
    path.write_text("one.example  # source: test\n")
    blocklist = Blocklist(path)
    path.unlink()
    assert not blocklist.reload()
    assert "sub.one.example" in blocklist


@pytest.mark.parametrize("path", [DEFAULT_BLOCKLIST_PATH, DEFAULT_SHORTENERS_PATH])
def test_shipped_host_lists_load_and_every_entry_names_its_source(path: Path) -> None:
    """Each entry line in the deploy/ host lists carries a source comment and parses as a host."""
    entries = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert entries
    assert all("#" in line and line.split("#", 1)[1].strip() for line in entries)
    assert len(HostList(path)) == len(entries)


def test_default_shortener_list_is_used_when_none_given() -> None:
    """Without an explicit shortener list, deploy/shorteners.txt flags bit.ly."""
    assert "shortener" in check_destination("https://bit.ly/x", None).flags
