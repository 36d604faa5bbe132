"""Destination safety: may a short link point at this URL, and how far can the destination be trusted.

Refusals (DestinationVerdict.reason, machine-readable): invalid_url, url_too_long, scheme_not_allowed,
credentials_in_url, invalid_port, invalid_host, idna_invalid, private_ip, private_host, blocklisted.
Flags lower `trust` without refusing: punycode, mixed_script, lookalike, shortener, ip_literal,
nonstandard_port, insecure_scheme.

Host names are not resolved: the browser, not clickwire, fetches the destination, so DNS answers
seen here would prove nothing about what the clicker's resolver returns (the dispatcher's SSRF guard
resolves, because there clickwire itself connects). Numeric hosts are parsed the way browsers parse
them (WHATWG URL standard), so "http://2130706433/" and "http://0x7f.1/" are seen as 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final
from urllib.parse import SplitResult, quote, urlsplit

import idna

MAX_URL_LENGTH: Final = 2048  # the de-facto interoperable limit (sitemaps, old IE, many proxies)
ALLOWED_SCHEMES: Final = frozenset({"http", "https"})
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
DEPLOY_DIR: Final = Path(__file__).resolve().parent.parent / "deploy"
DEFAULT_BLOCKLIST_PATH: Final = DEPLOY_DIR / "blocklist.txt"
DEFAULT_SHORTENERS_PATH: Final = DEPLOY_DIR / "shorteners.txt"

# How much each flag lowers trust (100 = no flag). Look-alike hosts weigh most: they are how
# phishing links imitate a brand; shorteners hide the real destination behind a second hop.
TRUST_PENALTIES: Final = {
    "mixed_script": 50,
    "lookalike": 50,
    "ip_literal": 30,
    "shortener": 20,
    "punycode": 15,
    "nonstandard_port": 10,
    "insecure_scheme": 5,
}

# Special-use names (RFC 6761, 6762, 7686, 8375, 9476 and the ICANN-reserved .internal) that never
# reach a public site; single-label hosts are refused too for the same reason.
_PRIVATE_SUFFIXES: Final = frozenset(
    {
        "localhost",
        "local",
        "internal",
        "home.arpa",
        "arpa",
        "test",
        "invalid",
        "example",
        "onion",
        "alt",
        "lan",
    }
)

# Cyrillic, Greek and Armenian letters that render like Latin ones; a label made only of these
# imitates an ASCII name (Cyrillic "\u0430\u0440\u0440\u04cf\u0435" for "apple"). Taken from
# Unicode's confusables.txt; lower-case only, since UTS46 lower-cases hosts first.
_LATIN_LOOKALIKES: Final = frozenset("асеорхуківјѕһԁԛԝӏԍօոսᴠοινκρτυχαβεηϲ")

# Script combinations UTS39's "highly restrictive" level accepts in one label (CJK users mix these).
_ALLOWED_SCRIPT_MIXES: Final = (
    frozenset({"LATIN", "HAN", "KANA"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
)
_SCRIPT_ALIASES: Final = {
    "CJK": "HAN",
    "HIRAGANA": "KANA",
    "KATAKANA": "KANA",
    "KATAKANA-HIRAGANA": "KANA",
    "HALFWIDTH": "KANA",
}


@dataclass(frozen=True, slots=True)
class DestinationVerdict:
    """Whether a destination is acceptable, why not, and how far it can be trusted."""

    ok: bool
    reason: str | None
    trust: int
    flags: list[str] = field(default_factory=list)
    normalized_url: str = ""


class HostList:
    """A set of host names loaded from a text file, matched with their subdomains, reloadable.

    File format: one host per line, `#` starts a comment (each entry carries its source there).
    """

    __slots__ = ("_hosts", "_path", "_stamp")

    def __init__(self, path: str | os.PathLike[str] | None = None, hosts: Iterable[str] = ()) -> None:
        self._path = Path(path) if path is not None else None
        self._stamp: tuple[int, int, int] | None = None
        self._hosts: frozenset[str] = frozenset(_normalize_entry(h) for h in hosts)
        if self._path is not None:
            self._load(self._path)

    @property
    def hosts(self) -> frozenset[str]:
        """The normalised (ASCII, lower-case) hosts currently loaded."""
        return self._hosts

    def reload(self) -> bool:
        """Re-read the file if it changed since the last load (one stat call); True if reloaded.

        A file that vanished or fails to parse keeps the previous list: a bad deploy must not
        silently empty a blocklist.
        """
        if self._path is None:
            return False
        try:
            stamp = _stamp(self._path)
        except OSError:
            return False
        if stamp == self._stamp:
            return False
        try:
            self._load(self._path)
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return True

    def match(self, host: str) -> str | None:
        """Return the entry matching `host` (normalised ASCII) or one of its parent domains, if any."""
        hosts = self._hosts
        if host in hosts:
            return host
        start = host.find(".")
        while start != -1:
            parent = host[start + 1 :]
            if parent in hosts:
                return parent
            start = host.find(".", start + 1)
        return None

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and self.match(host) is not None

    def __len__(self) -> int:
        return len(self._hosts)

    def _load(self, path: Path) -> None:
        stamp = _stamp(path)
        text = path.read_text(encoding="utf-8")
        self._hosts = frozenset(parse_host_lines(text.splitlines()))
        self._stamp = stamp


class Blocklist(HostList):
    """Hosts (and their subdomains) a link may never point at; deploy/blocklist.txt by default."""

    __slots__ = ()


class Shorteners(HostList):
    """Known URL-shortener hosts, flagged because they hide the real destination."""

    __slots__ = ()


def parse_host_lines(lines: Iterable[str]) -> list[str]:
    """Return the normalised hosts of a host-list file's lines (comments and blanks skipped)."""
    hosts = []
    for raw in lines:
        entry = raw.split("#", 1)[0].strip()
        if entry:
            hosts.append(_normalize_entry(entry))
    return hosts


@lru_cache(maxsize=1)
def default_shorteners() -> Shorteners:
    """Return the shortener list from deploy/shorteners.txt, loaded once."""
    return Shorteners(DEFAULT_SHORTENERS_PATH)


def check_destination(
    url: str, blocklist: HostList | None, shorteners: HostList | None = None
) -> DestinationVerdict:
    """Judge `url` as a link destination: refuse unsafe ones with a reason, score and flag the rest."""
    if shorteners is None:
        shorteners = default_shorteners()
    url = url.strip(" \t\r\n")
    if len(url) > MAX_URL_LENGTH:
        return _refuse("url_too_long")
    # Browsers silently drop tabs and newlines inside URLs, so "ht\ttp://" or a host split by a
    # newline would mean something else to them than to us: refuse instead of guessing.
    if not url or any(c <= " " or c == "\x7f" for c in url):
        return _refuse("invalid_url")
    try:
        parts = urlsplit(url)
    except ValueError:
        return _refuse("invalid_url")
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        return _refuse("scheme_not_allowed")
    netloc = parts.netloc
    if not netloc or "\\" in netloc:
        return _refuse("invalid_url")
    if "@" in netloc:
        return _refuse("credentials_in_url")
    try:
        port = parts.port
    except ValueError:
        return _refuse("invalid_port")
    if netloc.endswith(":") or (port is not None and port == 0):
        return _refuse("invalid_port")

    flags: list[str] = []
    host_result = _check_host(parts, flags)
    if isinstance(host_result, DestinationVerdict):
        return host_result
    host = host_result

    if blocklist is not None and blocklist.match(host) is not None:
        return _refuse("blocklisted")
    if shorteners.match(host) is not None:
        flags.append("shortener")
    if port is not None and port != DEFAULT_PORTS[scheme]:
        flags.append("nonstandard_port")
    if scheme == "http":
        flags.append("insecure_scheme")

    authority = host if ":" not in host else f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        authority = f"{authority}:{port}"
    normalized = f"{scheme}://{authority}{_encode(parts.path) or '/'}"
    if parts.query:
        normalized += "?" + _encode(parts.query)
    if parts.fragment:
        normalized += "#" + _encode(parts.fragment)
    if len(normalized) > MAX_URL_LENGTH:
        return _refuse("url_too_long")
    trust = max(0, 100 - sum(TRUST_PENALTIES.get(f, 0) for f in flags))
    return DestinationVerdict(ok=True, reason=None, trust=trust, flags=flags, normalized_url=normalized)


def _check_host(parts: SplitResult, flags: list[str]) -> str | DestinationVerdict:
    """Return the normalised ASCII host, appending flags, or a refusal."""
    raw = parts.hostname
    if not raw:
        return _refuse("invalid_host")
    if "%" in raw:
        # Browsers percent-decode hosts ("%31%32%37.0.0.1" is 127.0.0.1); nobody needs that.
        return _refuse("invalid_host")
    if parts.netloc.rsplit("@", 1)[-1].startswith("["):
        try:
            ip6 = ipaddress.IPv6Address(raw)
        except ValueError:
            return _refuse("invalid_host")
        if not is_public_ip(ip6):
            return _refuse("private_ip")
        flags.append("ip_literal")
        return ip6.compressed

    try:
        mapped = idna.uts46_remap(raw, std3_rules=False, transitional=False)
    except idna.IDNAError:
        return _refuse("idna_invalid")
    host = mapped[:-1] if mapped.endswith(".") else mapped
    try:
        ip4 = parse_ipv4_whatwg(host)
    except ValueError:
        return _refuse("invalid_host")
    if ip4 is not None:
        if not is_public_ip(ip4):
            return _refuse("private_ip")
        flags.append("ip_literal")
        return str(ip4)

    labels = host.split(".")
    ascii_labels = []
    for label in labels:
        encoded = _label_to_ascii(label)
        if encoded is None:
            return _refuse("idna_invalid")
        ascii_labels.append(encoded)
    ascii_host = ".".join(ascii_labels)
    if len(ascii_host) > 253:
        return _refuse("idna_invalid")
    if len(ascii_labels) < 2 or _is_special_use(ascii_host):
        return _refuse("private_host")

    if any(lbl.startswith("xn--") for lbl in ascii_labels):
        flags.append("punycode")
        unicode_labels = [idna.decode(lbl) if lbl.startswith("xn--") else lbl for lbl in ascii_labels]
        if any(_is_mixed_script(lbl) for lbl in unicode_labels):
            flags.append("mixed_script")
        if any(_is_lookalike(lbl) for lbl in unicode_labels):
            flags.append("lookalike")
    return ascii_host


def _label_to_ascii(label: str) -> str | None:
    """Return the ASCII (A-label) form of one host label, or None when it is not a valid label."""
    if not label or len(label) > 63:
        return None
    if label.isascii() and not label.startswith("xn--"):
        # Plain ASCII: letters, digits, hyphens and (real-world, not RFC 952) underscores.
        if label[0] == "-" or label[-1] == "-":
            return None
        if all(c.isalnum() or c in "-_" for c in label):
            return label
        return None
    try:
        encoded = idna.encode(label, uts46=True, transitional=False).decode("ascii")
        idna.decode(encoded)  # an A-label must also decode back (rejects "xn--zz" and friends)
    except (idna.IDNAError, UnicodeError):
        return None
    return encoded


def parse_ipv4_whatwg(host: str) -> ipaddress.IPv4Address | None:
    """Parse `host` as browsers do (decimal, octal, hex, 1-4 parts); None if it is not numeric.

    Raises ValueError when the host ends in a number but is not a valid IPv4 address, which
    browsers also refuse ("999.1.1.1", "1.2.3.4.5").
    """
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if not (last.isdecimal() and last.isascii()) and not _is_hex_part(last):
        return None
    if len(parts) > 4:
        raise ValueError("too many parts")
    numbers = [_ipv4_number(p) for p in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError("part out of range")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _is_hex_part(part: str) -> bool:
    return part[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF" for c in part[2:])


def _ipv4_number(part: str) -> int:
    if not part:
        raise ValueError("empty part")
    if part[:2].lower() == "0x":
        return int(part[2:], 16) if len(part) > 2 else 0
    if not (part.isascii() and part.isdecimal()):
        raise ValueError(f"not a number: {part!r}")
    if len(part) > 1 and part[0] == "0":
        return int(part[1:], 8)
    return int(part)


def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Return True only for globally routable unicast addresses (IPv4 embedded in IPv6 included)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public_ip(embedded):
            return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _IETF_PROTOCOL:
        return False
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback or ip.is_link_local
    )


_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 6890 IETF protocol assignments: Python before 3.11.10 calls most of it global, later ones do
# not; refuse it whatever the patch version, so a verdict never depends on the interpreter.
_IETF_PROTOCOL: Final = ipaddress.IPv4Network("192.0.0.0/24")


def _is_special_use(host: str) -> bool:
    labels = host.split(".")
    return any(".".join(labels[i:]) in _PRIVATE_SUFFIXES for i in range(len(labels)))


def _scripts(label: str) -> set[str]:
    scripts = set()
    for ch in label:
        if ch.isascii() and not ch.isalpha():
            continue  # digits and hyphen belong to every script
        name = unicodedata.name(ch, "")
        word = name.split(" ", 1)[0]
        if not word or word in {"DIGIT", "HYPHEN-MINUS", "COMBINING", "MODIFIER"}:
            continue
        scripts.add(_SCRIPT_ALIASES.get(word, word))
    return scripts


def _is_mixed_script(label: str) -> bool:
    scripts = _scripts(label)
    return len(scripts) > 1 and not any(scripts <= allowed for allowed in _ALLOWED_SCRIPT_MIXES)


def _is_lookalike(label: str) -> bool:
    letters = [c for c in label if c.isalpha()]
    return bool(letters) and not label.isascii() and all(c in _LATIN_LOOKALIKES for c in letters)


def _normalize_entry(entry: str) -> str:
    entry = entry.strip().lower().rstrip(".")
    if entry.startswith("[") and entry.endswith("]"):
        entry = entry[1:-1]
    try:
        return ipaddress.ip_address(entry).compressed
    except ValueError:
        pass
    try:
        return idna.encode(entry, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError:
        # Underscores and other real-world ASCII names the strict IDNA rules refuse.
        if entry.isascii():
            return entry
        raise ValueError(f"host list entry is not a host name: {entry!r}") from None


def _encode(text: str) -> str:
    # Percent-encode only what is not ASCII, as browsers do; existing escapes stay untouched.
    if text.isascii():
        return text
    return "".join(c if c.isascii() else quote(c, safe="") for c in text)


def _stamp(path: Path) -> tuple[int, int, int]:
    # mtime alone misses two writes within the filesystem's timestamp resolution and atomic
    # renames of an older file; inode and size catch those.
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _refuse(reason: str) -> DestinationVerdict:
    return DestinationVerdict(ok=False, reason=reason, trust=0)
