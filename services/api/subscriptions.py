"""Webhook subscriptions: request JSON <-> the ``WebhookSubscription`` Avro record (webhook_subscription.avsc).

Pure: no I/O. Validation collects every problem in a body and raises one 422 ``invalid_body``
:class:`~services.api.problems.Problem` listing them (``errors[].loc`` names the field), so a client
fixes a request in one round trip. Unknown fields are refused rather than ignored: a misspelt
``evnet_types`` silently falling back to the default would subscribe to the wrong events.

Secrets never leave through :func:`public_view`; the API returns one only in the response that
created it (create, rotate-secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import uuid_utils

from services.api.problems import Problem
from services.dispatcher.payload import EVENT_TYPES, rfc3339_ms

MODES: Final = ("single", "batch")
# Vocabularies of enriched_click.avsc (device_type, referrer_class, bot_kind docs); a filter on a
# value the enricher never emits would silently match nothing.
DEVICE_TYPES: Final = frozenset({"desktop", "mobile", "tablet", "tv", "console", "bot", "other"})
REFERRER_CLASSES: Final = frozenset({"search", "social", "email", "ai_assistant", "internal", "direct", "other"})
BOT_KINDS: Final = frozenset({"crawler", "search_engine", "link_preview", "security_scanner", "monitor",
                              "ai_agent", "automation", "headless"})
LIST_FILTERS: Final = ("link_ids", "domains", "tags", "campaigns", "countries", "device_types",
                       "referrer_classes", "bot_kinds")
FILTER_FIELDS: Final = (*LIST_FILTERS, "include_bots", "min_trust")
CREATE_FIELDS: Final = frozenset({"url", "description", "event_types", "filters", "mode", "batch_max",
                                  "batch_ms", "enabled", "disabled_reason"})
BATCH_MAX_RANGE: Final = (1, 1000)
BATCH_MS_RANGE: Final = (1, 60_000)
MAX_URL_LEN: Final = 2048
MAX_DESCRIPTION_LEN: Final = 500
MAX_FILTER_VALUES: Final = 1000
DEFAULT_GRACE_S: Final = 24 * 3600
MAX_GRACE_S: Final = 7 * 24 * 3600
USER_DISABLED_REASON: Final = "disabled through the API"
_COUNTRY = re.compile(r"^[A-Z]{2}$")

Record = dict[str, Any]


class _Errors:
    """Collects field errors; ``raise_if_any`` turns them into one 422 problem."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: Sequence[str | int], msg: str, kind: str = "value_error") -> None:
        self.items.append({"loc": list(loc), "msg": msg, "type": kind})

    def raise_if_any(self) -> None:
        if self.items:
            first = self.items[0]
            detail = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
            if len(self.items) > 1:
                detail += f" (and {len(self.items) - 1} more)"
            raise Problem(422, "invalid_body", detail, errors=self.items)


def new_subscription_id() -> str:
    """Return a new, time-ordered subscription id (``wh_`` + uuid7 hex), so ids sort by creation."""
    return "wh_" + uuid_utils.uuid7().hex


def default_filters() -> Record:
    """Return the filters record that matches everything except bots (avsc defaults)."""
    return {**{name: [] for name in LIST_FILTERS}, "include_bots": False, "min_trust": None}


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; `"batch_max": true` must not read as 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _string_list(errors: _Errors, loc: Sequence[str], value: Any, allowed: frozenset[str] | None = None,
                 *, normalize: Any = None) -> list[str]:
    if not isinstance(value, list):
        errors.add(loc, "must be a list of strings", "type_error")
        return []
    if len(value) > MAX_FILTER_VALUES:
        errors.add(loc, f"at most {MAX_FILTER_VALUES} values")
        return []
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            errors.add([*loc, i], "must be a non-empty string", "type_error")
            continue
        text = item.strip() if normalize is None else normalize(item.strip())
        if allowed is not None and text not in allowed:
            errors.add([*loc, i], f"unknown value {text!r}; one of {', '.join(sorted(allowed))}")
            continue
        if text not in out:
            out.append(text)
    return out


def _parse_filters(errors: _Errors, value: Any, base: Mapping[str, Any]) -> Record:
    if not isinstance(value, dict):
        errors.add(["filters"], "must be an object", "type_error")
        return dict(base)
    filters = dict(base)
    for key in value:
        if key not in FILTER_FIELDS:
            errors.add(["filters", key], f"unknown filter; one of {', '.join(FILTER_FIELDS)}", "extra_forbidden")
    vocab: dict[str, frozenset[str]] = {"device_types": DEVICE_TYPES, "referrer_classes": REFERRER_CLASSES,
                                        "bot_kinds": BOT_KINDS}
    for name in LIST_FILTERS:
        if name not in value:
            continue
        loc = ["filters", name]
        if name == "countries":
            countries = _string_list(errors, loc, value[name], normalize=str.upper)
            for i, code in enumerate(countries):
                if not _COUNTRY.match(code):
                    errors.add([*loc, i], f"{code!r} is not an ISO 3166-1 alpha-2 code")
            filters[name] = countries
        elif name == "domains":
            filters[name] = _string_list(errors, loc, value[name], normalize=str.lower)
        else:
            filters[name] = _string_list(errors, loc, value[name], vocab.get(name))
    if "include_bots" in value:
        if isinstance(value["include_bots"], bool):
            filters["include_bots"] = value["include_bots"]
        else:
            errors.add(["filters", "include_bots"], "must be true or false", "type_error")
    if "min_trust" in value:
        trust = value["min_trust"]
        if trust is None or (_is_int(trust) and 0 <= trust <= 100):
            filters["min_trust"] = trust
        else:
            errors.add(["filters", "min_trust"], "must be an integer from 0 to 100, or null")
    return filters


def _check_fields(errors: _Errors, body: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise Problem(422, "invalid_body", "the body must be a JSON object",
                      errors=[{"loc": [], "msg": "must be an object", "type": "type_error"}])
    for key in body:
        if key not in allowed:
            errors.add([key], "unknown field", "extra_forbidden")
    return body


def _apply_fields(errors: _Errors, body: Mapping[str, Any], record: Record) -> None:
    """Validate each field present in ``body`` and write it into ``record``."""
    if "url" in body:
        url = body["url"]
        if not isinstance(url, str) or not url.strip():
            errors.add(["url"], "must be a non-empty string", "type_error")
        elif len(url) > MAX_URL_LEN:
            errors.add(["url"], f"at most {MAX_URL_LEN} characters")
        else:
            record["url"] = url.strip()
    if "description" in body:
        desc = body["description"]
        if desc is None:
            record["description"] = ""
        elif not isinstance(desc, str) or len(desc) > MAX_DESCRIPTION_LEN:
            errors.add(["description"], f"must be a string of at most {MAX_DESCRIPTION_LEN} characters")
        else:
            record["description"] = desc
    if "event_types" in body:
        types = _string_list(errors, ["event_types"], body["event_types"], frozenset(EVENT_TYPES))
        if isinstance(body["event_types"], list) and not body["event_types"]:
            errors.add(["event_types"], "at least one event type")
        record["event_types"] = types
    if "filters" in body:
        record["filters"] = _parse_filters(errors, body["filters"], record.get("filters") or default_filters())
    if "mode" in body:
        if body["mode"] in MODES:
            record["mode"] = body["mode"]
        else:
            errors.add(["mode"], "must be single or batch")
    for name, (lo, hi) in (("batch_max", BATCH_MAX_RANGE), ("batch_ms", BATCH_MS_RANGE)):
        if name in body:
            value = body[name]
            if _is_int(value) and lo <= value <= hi:
                record[name] = value
            else:
                errors.add([name], f"must be an integer from {lo} to {hi}")
    if "enabled" in body:
        if isinstance(body["enabled"], bool):
            record["enabled"] = body["enabled"]
        else:
            errors.add(["enabled"], "must be true or false", "type_error")
    if "disabled_reason" in body:
        reason = body["disabled_reason"]
        if reason is None or (isinstance(reason, str) and len(reason) <= MAX_DESCRIPTION_LEN):
            record["disabled_reason"] = reason
        else:
            errors.add(["disabled_reason"], f"must be a string of at most {MAX_DESCRIPTION_LEN} characters")
    # An enabled subscription has no reason to be disabled; a disabled one always says why.
    if record.get("enabled", True):
        record["disabled_reason"] = None
    elif not record.get("disabled_reason"):
        record["disabled_reason"] = USER_DISABLED_REASON


def build_subscription(body: Any, *, workspace_id: str, secret: str, now_ms: int,
                       subscription_id: str | None = None) -> Record:
    """Return the Avro record for a create request, or raise a 422 Problem listing every bad field."""
    errors = _Errors()
    fields = _check_fields(errors, body, CREATE_FIELDS)
    if "url" not in fields:
        errors.add(["url"], "required", "missing")
    record: Record = {
        "id": subscription_id or new_subscription_id(),
        "workspace_id": workspace_id,
        "url": "",
        "description": "",
        "event_types": ["click"],
        "filters": default_filters(),
        "mode": "single",
        "batch_max": 100,
        "batch_ms": 1000,
        "enabled": True,
        "disabled_reason": None,
        "secrets": [{"secret": secret, "expires_ms": None}],
        "created_ms": now_ms,
        "updated_ms": now_ms,
    }
    _apply_fields(errors, fields, record)
    errors.raise_if_any()
    return record


def patch_subscription(current: Mapping[str, Any], body: Any, *, now_ms: int) -> Record:
    """Return ``current`` with the fields of a PATCH body applied (filters merge key by key)."""
    errors = _Errors()
    fields = _check_fields(errors, body, CREATE_FIELDS)
    record: Record = {**current, "filters": dict(current["filters"])}
    if fields.get("enabled") is False and "disabled_reason" not in fields:
        record["disabled_reason"] = None  # a fresh disable says it came from the API, not an old reason
    _apply_fields(errors, fields, record)
    errors.raise_if_any()
    record["updated_ms"] = max(now_ms, int(current["updated_ms"]) + 1)
    return record


def parse_grace_seconds(value: Any) -> int:
    """Return a rotation grace period in seconds (default 24 h), or raise a 422 Problem."""
    if value is None:
        return DEFAULT_GRACE_S
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if _is_int(value) and 0 <= value <= MAX_GRACE_S:
        return int(value)
    raise Problem(422, "invalid_body", f"grace_seconds must be an integer from 0 to {MAX_GRACE_S}",
                  errors=[{"loc": ["grace_seconds"], "msg": f"0..{MAX_GRACE_S}", "type": "value_error"}])


def rotate_secret(current: Mapping[str, Any], new_secret: str, *, now_ms: int, grace_s: int) -> Record:
    """Return ``current`` signing with ``new_secret`` first and the old current secret until now + grace.

    Secrets rotated earlier keep their own expiry; expired ones are dropped. A zero grace drops the
    old secret at once (for a leaked secret).
    """
    kept: list[dict[str, Any]] = [{"secret": new_secret, "expires_ms": None}]
    for entry in current["secrets"]:
        expires = entry.get("expires_ms")
        if expires is None:
            expires = now_ms + grace_s * 1000
        if expires > now_ms:
            kept.append({"secret": entry["secret"], "expires_ms": expires})
    return {**current, "secrets": kept, "updated_ms": max(now_ms, int(current["updated_ms"]) + 1)}


def public_view(record: Mapping[str, Any], *, now_ms: int) -> Record:
    """Return the subscription as the API shows it: every field but the secrets' values."""
    live = [s for s in record["secrets"] if s.get("expires_ms") is None or s["expires_ms"] > now_ms]
    filters = dict(record["filters"])
    return {
        "id": record["id"],
        "url": record["url"],
        "description": record["description"],
        "event_types": list(record["event_types"]),
        "filters": filters,
        "mode": record["mode"],
        "batch_max": record["batch_max"],
        "batch_ms": record["batch_ms"],
        "enabled": record["enabled"],
        "disabled_reason": record["disabled_reason"],
        # Only when the old secrets stop signing, never the secrets themselves.
        "previous_secrets_expire_at": [rfc3339_ms(s["expires_ms"]) for s in live if s.get("expires_ms")],
        "created_at": rfc3339_ms(record["created_ms"]),
        "updated_at": rfc3339_ms(record["updated_ms"]),
    }
