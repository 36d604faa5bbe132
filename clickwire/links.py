"""The Link model shared by the API, the redirector and the enricher.

Field names mirror schemas/avro/link.avsc, which is the contract; timestamps are int ms since the
epoch (UTC) on both sides, so `to_avro()` output encodes as-is with fastavro.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote

REDIRECT_TYPES: Final = frozenset({301, 302, 307, 308})
BOT_POLICIES: Final = frozenset({"redirect", "preview", "refuse"})
RULE_FIELDS: Final = frozenset({"device_type", "os", "country", "language", "referrer_host", "query", "time"})
RULE_OPS: Final = frozenset({"eq", "in", "prefix", "between"})

# Query parameter each Link field fills. `campaign` is clickwire's own label; it also fills
# utm_campaign when the link has no explicit utm_campaign, so one field is enough for most users.
_UTM_FIELDS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


@dataclass(frozen=True, slots=True)
class RuleCondition:
    """One test on a click: `field op values` (see link.avsc for the vocabulary)."""

    field: str
    op: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.field not in RULE_FIELDS:
            raise ValueError(f"unknown rule field {self.field!r}")
        if self.op not in RULE_OPS:
            raise ValueError(f"unknown rule op {self.op!r}")


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """Send the click to `destination` when every condition holds."""

    conditions: tuple[RuleCondition, ...]
    destination: str


@dataclass(frozen=True, slots=True)
class Link:
    """A short link, exactly the fields of the `Link` Avro record."""

    id: str
    workspace_id: str
    domain: str
    code: str
    destination: str
    created_ms: int
    updated_ms: int
    redirect_type: int = 302
    expires_ms: int | None = None
    expired_url: str | None = None
    max_clicks: int | None = None
    tags: tuple[str, ...] = ()
    campaign: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    rules: tuple[RoutingRule, ...] = ()
    bot_policy: str = "redirect"
    preview_title: str | None = None
    preview_description: str | None = None
    preview_image: str | None = None
    destination_trust: int = 100
    destination_flags: tuple[str, ...] = ()
    blocked: bool = False

    def __post_init__(self) -> None:
        if self.redirect_type not in REDIRECT_TYPES:
            raise ValueError(
                f"redirect_type must be one of {sorted(REDIRECT_TYPES)}, not {self.redirect_type}"
            )
        if self.bot_policy not in BOT_POLICIES:
            raise ValueError(f"bot_policy must be one of {sorted(BOT_POLICIES)}, not {self.bot_policy!r}")
        if not 0 <= self.destination_trust <= 100:
            raise ValueError(f"destination_trust must be 0-100, not {self.destination_trust}")
        if self.max_clicks is not None and self.max_clicks < 0:
            raise ValueError("max_clicks must be >= 0")

    @property
    def key(self) -> str:
        """The Kafka key of this link on the compacted `links` topic: "domain/code"."""
        return f"{self.domain}/{self.code}"

    def to_avro(self) -> dict[str, Any]:
        """Return a dict that fastavro encodes with link.avsc (lists for arrays, ms ints for times)."""
        return {
            "id": self.id,
            "workspace_id": self.workspace_id,
            "domain": self.domain,
            "code": self.code,
            "destination": self.destination,
            "redirect_type": self.redirect_type,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "expires_ms": self.expires_ms,
            "expired_url": self.expired_url,
            "max_clicks": self.max_clicks,
            "tags": list(self.tags),
            "campaign": self.campaign,
            "utm_source": self.utm_source,
            "utm_medium": self.utm_medium,
            "utm_campaign": self.utm_campaign,
            "utm_term": self.utm_term,
            "utm_content": self.utm_content,
            "rules": [
                {
                    "conditions": [
                        {"field": c.field, "op": c.op, "values": list(c.values)} for c in r.conditions
                    ],
                    "destination": r.destination,
                }
                for r in self.rules
            ],
            "bot_policy": self.bot_policy,
            "preview_title": self.preview_title,
            "preview_description": self.preview_description,
            "preview_image": self.preview_image,
            "destination_trust": self.destination_trust,
            "destination_flags": list(self.destination_flags),
            "blocked": self.blocked,
        }

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Link:
        """Build a Link from a decoded Avro record; missing optional fields take the schema defaults."""
        return cls(
            id=record["id"],
            workspace_id=record["workspace_id"],
            domain=record["domain"],
            code=record["code"],
            destination=record["destination"],
            redirect_type=int(record.get("redirect_type", 302)),
            created_ms=_ms(record["created_ms"]),
            updated_ms=_ms(record["updated_ms"]),
            expires_ms=None if record.get("expires_ms") is None else _ms(record["expires_ms"]),
            expired_url=record.get("expired_url"),
            max_clicks=record.get("max_clicks"),
            tags=tuple(record.get("tags", ())),
            campaign=record.get("campaign"),
            utm_source=record.get("utm_source"),
            utm_medium=record.get("utm_medium"),
            utm_campaign=record.get("utm_campaign"),
            utm_term=record.get("utm_term"),
            utm_content=record.get("utm_content"),
            rules=tuple(
                RoutingRule(
                    conditions=tuple(
                        RuleCondition(field=c["field"], op=c["op"], values=tuple(c["values"]))
                        for c in r["conditions"]
                    ),
                    destination=r["destination"],
                )
                for r in record.get("rules", ())
            ),
            bot_policy=record.get("bot_policy", "redirect"),
            preview_title=record.get("preview_title"),
            preview_description=record.get("preview_description"),
            preview_image=record.get("preview_image"),
            destination_trust=int(record.get("destination_trust", 100)),
            destination_flags=tuple(record.get("destination_flags", ())),
            blocked=bool(record.get("blocked", False)),
        )


def _ms(value: Any) -> int:
    # fastavro decodes timestamp-millis to an aware datetime unless told not to; accept both.
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)


def utm_params(link: Link) -> list[tuple[str, str]]:
    """Return the (name, value) query params the link asks to add, in a stable order."""
    params: list[tuple[str, str]] = []
    for name in _UTM_FIELDS:
        value = getattr(link, name)
        if name == "utm_campaign" and value is None:
            value = link.campaign
        if value:
            params.append((name, value))
    return params


def utm_query(destination: str, link: Link) -> str:
    """Return the encoded "a=b&c=d" that apply_utm adds to `destination` ("" when nothing to add)."""
    params = utm_params(link)
    if not params:
        return ""
    base = destination.split("#", 1)[0]
    query = base.split("?", 1)[1] if "?" in base else ""
    present = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    return "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params if name not in present
    )


def apply_utm(destination: str, link: Link) -> str:
    """Return `destination` with the link's campaign/utm_* params added; params already there win.

    The existing query string is kept byte for byte (no re-encoding), new params go before any
    fragment.
    """
    added = utm_query(destination, link)
    if not added:
        return destination
    base, hash_, fragment = destination.partition("#")
    return base + utm_joiner(base) + added + hash_ + fragment


def utm_joiner(base: str) -> str:
    """Return what goes between a fragment-less URL and added params: "?", "&" or ""."""
    if "?" not in base:
        return "?"
    if base.endswith(("?", "&")):
        return ""
    return "&"
