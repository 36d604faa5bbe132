"""Webhook subscriptions: request JSON <-> the ``WebhookSubscription`` Avro record (webhook_subscription.avsc).

Pure: no I/O. Request models are strict (services/api/body.py): unknown fields are refused rather
than ignored, since a misspelt ``evnet_types`` falling back to the default would subscribe to the
wrong events. Vocabularies (event types, device types, referrer classes, bot kinds) are closed: a
filter on a value the enricher never emits would silently match nothing.

Secrets never leave through :func:`public_view`; the API returns one only in the response that
created it (create, rotate-secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal, Self

import uuid_utils
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, model_validator

from services.api.body import STRICT
from services.dispatcher.payload import rfc3339_ms

EventType = Literal["click", "link.created", "link.updated", "link.deleted", "webhook.disabled", "ping",
                    "milestone.reached", "traffic.spike", "traffic.suspicious", "link.destination_failing",
                    "link.blocked"]
# The vocabularies of enriched_click.avsc (device_type, referrer_class and bot_kind docs).
DeviceType = Literal["desktop", "mobile", "tablet", "tv", "console", "bot", "other"]
ReferrerClass = Literal["search", "social", "email", "ai_assistant", "internal", "direct", "other"]
BotKind = Literal["crawler", "search_engine", "link_preview", "security_scanner", "monitor", "ai_agent",
                  "automation", "headless"]
Mode = Literal["single", "batch"]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$", to_upper=True)]
Domain = Annotated[str, StringConstraints(min_length=1, max_length=253, strip_whitespace=True, to_lower=True)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(max_length=500)]
MAX_VALUES: Final = 1000
DEFAULT_GRACE_S: Final = 24 * 3600
MAX_GRACE_S: Final = 7 * 24 * 3600
USER_DISABLED_REASON: Final = "disabled through the API"
LIST_FILTERS: Final = ("link_ids", "domains", "tags", "campaigns", "countries", "device_types",
                       "referrer_classes", "bot_kinds")
# Fields a PATCH may set to null: everything else keeps its type.
_NULLABLE: Final = frozenset({"disabled_reason", "min_trust"})

Record = dict[str, Any]


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _no_nulls(model: BaseModel) -> None:
    for field in model.model_fields_set:
        if field not in _NULLABLE and getattr(model, field) is None:
            raise ValueError(f"{field} may not be null")


class WebhookFilters(BaseModel):
    """Which events reach the endpoint: an empty list matches anything; bots are excluded by default."""

    model_config = STRICT

    link_ids: list[Name] = Field(default_factory=list, max_length=MAX_VALUES)
    domains: list[Domain] = Field(default_factory=list, max_length=MAX_VALUES)
    tags: list[Name] = Field(default_factory=list, max_length=MAX_VALUES)
    campaigns: list[Name] = Field(default_factory=list, max_length=MAX_VALUES)
    countries: list[Country] = Field(default_factory=list, max_length=300,
                                     description="ISO 3166-1 alpha-2 codes")
    device_types: list[DeviceType] = Field(default_factory=list)
    referrer_classes: list[ReferrerClass] = Field(default_factory=list)
    include_bots: bool = Field(False, description="Also send clicks the enricher classified as bots")
    bot_kinds: list[BotKind] = Field(default_factory=list,
                                     description="Send bot clicks of these kinds (implies include_bots)")
    min_trust: int | None = Field(None, ge=0, le=100, description="Only clicks with trust_score >= this")


class WebhookFiltersPatch(WebhookFilters):
    """Filters in a PATCH: only the keys given change."""

    @model_validator(mode="after")
    def _check_nulls(self) -> Self:
        _no_nulls(self)
        return self


def _default_types() -> list[EventType]:
    return ["click"]


def _no_filters() -> WebhookFilters:
    return WebhookFilters.model_validate({})


class WebhookCreate(BaseModel):
    """Body of POST /v1/webhooks."""

    model_config = STRICT

    url: Url = Field(description="http(s) endpoint; must resolve to public addresses only")
    description: Text = ""
    event_types: list[EventType] = Field(default_factory=_default_types, min_length=1)
    filters: WebhookFilters = Field(default_factory=_no_filters)
    mode: Mode = Field("single", description="single: one event per request; batch: a JSON array")
    batch_max: int = Field(100, ge=1, le=1000, description="Batch mode: at most this many events per request")
    batch_ms: int = Field(1000, ge=1, le=60_000, description="Batch mode: send a partial batch after this long")
    enabled: bool = True
    disabled_reason: Text | None = None


class WebhookPatch(BaseModel):
    """Body of PATCH /v1/webhooks/{id}: only the fields given change; filters merge key by key."""

    model_config = STRICT

    url: Url | None = None
    description: Text | None = None
    event_types: list[EventType] | None = Field(None, min_length=1)
    filters: WebhookFiltersPatch | None = None
    mode: Mode | None = None
    batch_max: int | None = Field(None, ge=1, le=1000)
    batch_ms: int | None = Field(None, ge=1, le=60_000)
    enabled: bool | None = None
    disabled_reason: Text | None = None

    @model_validator(mode="after")
    def _check_nulls(self) -> Self:
        _no_nulls(self)
        return self


class RotateSecret(BaseModel):
    """Body of POST /v1/webhooks/{id}/rotate-secret (optional)."""

    model_config = STRICT

    grace_seconds: int = Field(DEFAULT_GRACE_S, ge=0, le=MAX_GRACE_S,
                               description="How long the old secret keeps signing (0 drops it at once)")


class ReplayBody(BaseModel):
    """Body of POST /v1/webhooks/{id}/replay: event ids, a time range of outbox time, or both."""

    model_config = STRICT

    event_ids: list[Name] | None = Field(None, min_length=1, max_length=1000)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.event_ids is None and self.since is None:
            raise ValueError("give event_ids, or a time range starting at since")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class Webhook(BaseModel):
    """A subscription as the API shows it (never its secrets)."""

    id: str
    url: str
    description: str
    event_types: list[EventType]
    filters: WebhookFilters
    mode: Mode
    batch_max: int
    batch_ms: int
    enabled: bool
    disabled_reason: str | None
    previous_secrets_expire_at: list[datetime] = Field(
        description="When each rotated-out secret stops signing (empty when none is live)")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(Webhook):
    """A new subscription with its signing secret, shown this once."""

    secret: str = Field(description="whsec_ + base64 of 32 random bytes; store it now, it is never shown again")


class WebhookPage(BaseModel):
    """One page of a workspace's subscriptions, oldest first."""

    data: list[Webhook]
    next_cursor: str | None


class SecretRotated(BaseModel):
    """The new signing secret, shown this once."""

    id: str
    secret: str
    previous_secrets_expire_at: list[datetime]


class PingQueued(BaseModel):
    """A ping event queued for delivery."""

    event_id: str
    type: Literal["ping"]


def new_subscription_id() -> str:
    """Return a new, time-ordered subscription id (``wh_`` + uuid7 hex), so ids sort by creation."""
    return "wh_" + uuid_utils.uuid7().hex


def _filters_record(filters: WebhookFilters) -> Record:
    record: Record = filters.model_dump()
    for name in LIST_FILTERS:
        record[name] = _unique(record[name])
    return record


def build_subscription(body: WebhookCreate, *, workspace_id: str, secret: str, now_ms: int,
                       subscription_id: str | None = None) -> Record:
    """Return the Avro record of a validated create request."""
    return {
        "id": subscription_id or new_subscription_id(),
        "workspace_id": workspace_id,
        "url": body.url,
        "description": body.description,
        "event_types": _unique(list(body.event_types)),
        "filters": _filters_record(body.filters),
        "mode": body.mode,
        "batch_max": body.batch_max,
        "batch_ms": body.batch_ms,
        "enabled": body.enabled,
        # An enabled subscription has no reason to be disabled; a disabled one always says why.
        "disabled_reason": None if body.enabled else (body.disabled_reason or USER_DISABLED_REASON),
        "secrets": [{"secret": secret, "expires_ms": None}],
        "created_ms": now_ms,
        "updated_ms": now_ms,
    }


def patch_subscription(current: Mapping[str, Any], body: WebhookPatch, *, now_ms: int) -> Record:
    """Return ``current`` with the fields a validated PATCH gave applied (filters merge key by key)."""
    record: Record = {**current, "filters": dict(current["filters"])}
    given = body.model_fields_set
    for field in ("url", "description", "mode", "batch_max", "batch_ms", "enabled", "disabled_reason"):
        if field in given:
            record[field] = getattr(body, field)
    if "event_types" in given and body.event_types is not None:
        record["event_types"] = _unique(list(body.event_types))
    if body.filters is not None:
        patch = _filters_record(body.filters)
        for field in body.filters.model_fields_set:
            record["filters"][field] = patch[field]
    if record["enabled"]:
        record["disabled_reason"] = None
    elif ("disabled_reason" not in given and current["enabled"]) or not record["disabled_reason"]:
        record["disabled_reason"] = USER_DISABLED_REASON
    # Strictly increasing, so followers can tell versions apart even within one millisecond.
    record["updated_ms"] = max(now_ms, int(current["updated_ms"]) + 1)
    return record


def rotate_secret(current: Mapping[str, Any], new_secret: str, *, now_ms: int, grace_s: int) -> Record:
    """Return ``current`` signing with ``new_secret`` first and the old current secret until now + grace.

    Every old secret stops signing at now + grace at the latest (one rotated out earlier keeps an
    earlier expiry); expired ones are dropped, so a zero grace (a leaked secret) leaves only the new one.
    """
    cap = now_ms + grace_s * 1000
    kept: list[Record] = [{"secret": new_secret, "expires_ms": None}]
    for entry in current["secrets"]:
        expires = entry.get("expires_ms")
        expires = cap if expires is None else min(expires, cap)
        if expires > now_ms:
            kept.append({"secret": entry["secret"], "expires_ms": expires})
    return {**current, "secrets": kept, "updated_ms": max(now_ms, int(current["updated_ms"]) + 1)}


def previous_expiries(record: Mapping[str, Any], *, now_ms: int) -> list[str]:
    """Return when each rotated-out secret that still signs stops signing (RFC 3339)."""
    return [rfc3339_ms(s["expires_ms"]) for s in record["secrets"]
            if s.get("expires_ms") is not None and s["expires_ms"] > now_ms]


def public_view(record: Mapping[str, Any], *, now_ms: int) -> Record:
    """Return the subscription as the API shows it: every field but the secrets' values."""
    return {
        "id": record["id"],
        "url": record["url"],
        "description": record["description"],
        "event_types": list(record["event_types"]),
        "filters": dict(record["filters"]),
        "mode": record["mode"],
        "batch_max": record["batch_max"],
        "batch_ms": record["batch_ms"],
        "enabled": record["enabled"],
        "disabled_reason": record["disabled_reason"],
        "previous_secrets_expire_at": previous_expiries(record, now_ms=now_ms),
        "created_at": rfc3339_ms(record["created_ms"]),
        "updated_at": rfc3339_ms(record["updated_ms"]),
    }
