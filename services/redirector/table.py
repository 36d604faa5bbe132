"""The in-memory link table the redirector answers from, keyed by (domain, code).

Memory is the constraint (<= 250 bytes per link at 1M links, bench/link_memory.py), so each link
costs one dict entry whose value is one packed `bytes` record holding only what the hot path needs:

    0   16s  link id as UUID bytes (ids that are not UUIDs live in the side table)
    16  I    workspace id, index into an interned pool (many links per workspace)
    20  I    destination origin "scheme://host[:port]", interned (many links per site)
    24  I    utm tail "?utm_source=..." appended to the destination, interned (shared by a campaign)
    28  B    flags: bot policy, blocked, has limits, has side record, raw id, redirect type
    29  qq   only with the "has limits" flag: expires_ms, max_clicks (-1 for none)
    29/45 .. rest of the destination (path, query, fragment), UTF-8

Limits ride in the record because they are common (10% of links expire); rarer fields (routing
rules, preview texts, expired_url, non-UUID ids) live in a side dict only for links that have them.
Interned pools are reference-counted, so upserts and deletes replayed from the compacted topic do
not leak.

Ready answers: most clicks go to plain links (no routing rules, no bot policy, no click cap), whose
answer does not depend on the request. The redirector keeps the ready answer of such a link
(:class:`Answer`: the response head encoded once, what the click record needs) in a
bounded cache here, so a click on it skips decoding the record and `decide()`. Precomputing one for
every link would cost ~700 bytes a link (bench/link_memory.py); the cache holds at most ANSWERS_MAX
(~11 MiB), evicting the oldest entry first (a hot link evicted comes back on its next click). Every
upsert and remove drops the link's entry, so an answer never outlives the record it came from.
"""

from __future__ import annotations

import struct
import uuid
from array import array
from dataclasses import dataclass
from typing import Final, NamedTuple

from clickwire.links import Link, RoutingRule, apply_utm, utm_joiner, utm_query

_HEADER: Final = struct.Struct("<16sIIIB")
_HEADER_SIZE: Final = _HEADER.size
_LIMITS: Final = struct.Struct("<qq")
_LIMITS_END: Final = _HEADER_SIZE + _LIMITS.size

_BOT_POLICIES: Final = ("redirect", "preview", "refuse")
_REDIRECT_TYPES: Final = (301, 302, 307, 308)
_F_BOT_MASK: Final = 0b11
_F_BLOCKED: Final = 1 << 2
_F_EXTRA: Final = 1 << 3
_F_RAW_ID: Final = 1 << 4
_F_LIMITS: Final = 1 << 5
_F_TYPE_SHIFT: Final = 6
ANSWERS_MAX: Final = 16_384


class HotLink(NamedTuple):
    """What the redirector needs to answer a click (destination already has utm params applied)."""

    link_id: str
    workspace_id: str
    domain: str
    code: str
    destination: str
    redirect_type: int = 302
    bot_policy: str = "redirect"
    blocked: bool = False
    expires_ms: int | None = None
    expired_url: str | None = None
    max_clicks: int | None = None
    rules: tuple[RoutingRule, ...] = ()
    preview_title: str | None = None
    preview_description: str | None = None
    preview_image: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The redirect a plain link answers every request with, until `valid_until` (epoch ms, exclusive).

    A slotted class, not a NamedTuple: the fast path reads seven of its fields per click, and Python 3.11
    reads a slot ~11 ns faster than a NamedTuple field (a descriptor found by a generic lookup).
    """

    status: int
    location: str
    key: bytes  # the link id, UTF-8: the click's partition key
    link_id: str
    workspace_id: str
    valid_until: int
    head: bytes  # status line and headers on the wire (http1.encode_head), written as they are


@dataclass(frozen=True, slots=True)
class _Extra:
    link_id: str | None
    expired_url: str | None
    rules: tuple[RoutingRule, ...]
    preview_title: str | None
    preview_description: str | None
    preview_image: str | None


class _Interner:
    """Strings shared by many links, stored once and referred to by a 32-bit index."""

    __slots__ = ("_counts", "_free", "_index", "values")

    def __init__(self) -> None:
        self.values: list[str] = [""]  # index 0 is the empty string, never released
        # array, not list: counts above 256 would each be a separate 28-byte int object.
        self._counts = array("L", [0])
        self._index: dict[str, int] = {"": 0}
        self._free: list[int] = []

    def acquire(self, value: str) -> int:
        i = self._index.get(value)
        if i is None:
            if self._free:
                i = self._free.pop()
                self.values[i] = value
            else:
                i = len(self.values)
                self.values.append(value)
                self._counts.append(0)
            self._index[value] = i
        self._counts[i] += 1
        return i

    def release(self, i: int) -> None:
        if i == 0:
            return
        self._counts[i] -= 1
        if self._counts[i] == 0:
            del self._index[self.values[i]]
            self.values[i] = ""
            self._free.append(i)

    def __len__(self) -> int:
        return len(self._index) - 1


class LinkTable:
    """All links of the redirector's domains, compact in memory, looked up by (domain, code)."""

    __slots__ = ("_answers", "_count", "_domains", "_extras", "_origins", "_tails", "_workspaces")

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str], Answer] = {}
        self._domains: dict[str, dict[str, bytes]] = {}
        self._extras: dict[tuple[str, str], _Extra] = {}
        self._workspaces = _Interner()
        self._origins = _Interner()
        self._tails = _Interner()
        self._count = 0

    def upsert(self, link: Link) -> None:
        """Insert or replace the link stored under (link.domain, link.code)."""
        self.remove(link.domain, link.code)  # drops its ready answer too
        full = apply_utm(link.destination, link)
        split = _origin_end(full)
        origin, rest = full[:split], full[split:]
        tail = ""
        added = utm_query(link.destination, link)
        if added and "#" not in link.destination:
            tail = utm_joiner(link.destination) + added
            rest = rest[: len(rest) - len(tail)]

        raw_id = _uuid_bytes(link.id)
        flags = _BOT_POLICIES.index(link.bot_policy) | (
            _REDIRECT_TYPES.index(link.redirect_type) << _F_TYPE_SHIFT
        )
        if link.blocked:
            flags |= _F_BLOCKED
        if raw_id is None:
            flags |= _F_RAW_ID
        extra = _Extra(
            link_id=link.id if raw_id is None else None,
            expired_url=link.expired_url,
            rules=tuple(RoutingRule(r.conditions, apply_utm(r.destination, link)) for r in link.rules),
            preview_title=link.preview_title,
            preview_description=link.preview_description,
            preview_image=link.preview_image,
        )
        if extra != _NO_EXTRA:
            flags |= _F_EXTRA
            self._extras[(link.domain, link.code)] = extra

        limits = b""
        if link.expires_ms is not None or link.max_clicks is not None:
            flags |= _F_LIMITS
            limits = _LIMITS.pack(
                -1 if link.expires_ms is None else link.expires_ms,
                -1 if link.max_clicks is None else link.max_clicks,
            )
        header = _HEADER.pack(
            raw_id or bytes(16),
            self._workspaces.acquire(link.workspace_id),
            self._origins.acquire(origin),
            self._tails.acquire(tail),
            flags,
        )
        codes = self._domains.get(link.domain)
        if codes is None:
            codes = self._domains[link.domain] = {}
        codes[link.code] = b"".join((header, limits, rest.encode()))
        self._count += 1

    def remove(self, domain: str, code: str) -> bool:
        """Forget the link under (domain, code); True if there was one (a tombstone on the topic)."""
        self._answers.pop((domain, code), None)
        codes = self._domains.get(domain)
        if codes is None:
            return False
        record = codes.pop(code, None)
        if record is None:
            return False
        if not codes:
            del self._domains[domain]
        _, workspace, origin, tail, flags = _HEADER.unpack_from(record)
        self._workspaces.release(workspace)
        self._origins.release(origin)
        self._tails.release(tail)
        if flags & _F_EXTRA:
            del self._extras[(domain, code)]
        self._count -= 1
        return True

    def lookup(self, domain: str, code: str) -> HotLink | None:
        """Return the link under (domain, code), or None when there is none."""
        codes = self._domains.get(domain)
        if codes is None:
            return None
        record = codes.get(code)
        if record is None:
            return None
        raw_id, workspace, origin, tail, flags = _HEADER.unpack_from(record)
        expires_ms = max_clicks = None
        if flags & _F_LIMITS:
            expires, cap = _LIMITS.unpack_from(record, _HEADER_SIZE)
            expires_ms = None if expires < 0 else expires
            max_clicks = None if cap < 0 else cap
            rest = record[_LIMITS_END:]
        else:
            rest = record[_HEADER_SIZE:]
        # tuple.__new__ skips NamedTuple's Python-level __new__ (about 40% of a lookup).
        fields = (
            _uuid_str(raw_id) if not flags & _F_RAW_ID else "",
            self._workspaces.values[workspace],
            domain,
            code,
            self._origins.values[origin] + rest.decode() + self._tails.values[tail],
            _REDIRECT_TYPES[flags >> _F_TYPE_SHIFT],
            _BOT_POLICIES[flags & _F_BOT_MASK],
            bool(flags & _F_BLOCKED),
            expires_ms,
            None,
            max_clicks,
        )
        if not flags & _F_EXTRA:
            return _new_tuple(HotLink, (*fields, (), None, None, None))
        extra = self._extras[(domain, code)]
        if extra.link_id is not None:
            fields = (extra.link_id, *fields[1:])
        return _new_tuple(
            HotLink,
            (
                *fields[:9],
                extra.expired_url,
                max_clicks,
                extra.rules,
                extra.preview_title,
                extra.preview_description,
                extra.preview_image,
            ),
        )

    @property
    def answers(self) -> dict[tuple[str, str], Answer]:
        """Ready answers by (domain, code): read it, add to it only through remember()."""
        return self._answers

    def remember(self, domain: str, code: str, answer: Answer) -> None:
        """Keep the ready answer of the link now under (domain, code) until it changes or is evicted."""
        answers = self._answers
        if len(answers) >= ANSWERS_MAX and (domain, code) not in answers:
            del answers[next(iter(answers))]  # the oldest entry: dicts keep insertion order
        answers[(domain, code)] = answer

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        codes = self._domains.get(key[0])
        return codes is not None and key[1] in codes


_new_tuple: Final = tuple.__new__
_NO_EXTRA: Final = _Extra(None, None, (), None, None, None)


def _origin_end(url: str) -> int:
    """Index where "scheme://authority" ends in `url` (the whole URL when it has no path)."""
    start = url.find("://")
    start = 0 if start == -1 else start + 3
    for i in range(start, len(url)):
        if url[i] in "/?#":
            return i
    return len(url)


def _uuid_str(raw: bytes) -> str:
    """Canonical UUID text of 16 bytes, about 4x faster than str(uuid.UUID(bytes=raw))."""
    # hex("-", 2) puts a dash every 4 digits; keep the ones UUID text has (8-4-4-4-12).
    h = raw.hex("-", 2)
    return h[:4] + h[5:29] + h[30:34] + h[35:]


def _uuid_bytes(value: str) -> bytes | None:
    """16 bytes of a canonical (lower-case, hyphenated) UUID string, None for any other id."""
    if len(value) != 36:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    # Only ids that round-trip exactly may be packed, or lookup would hand back a different string.
    return parsed.bytes if str(parsed) == value else None
