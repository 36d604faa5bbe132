"""Errors as RFC 9457 ``application/problem+json`` documents with a machine-readable ``reason``.

Every refusal the API makes is a :class:`Problem`; handlers raise it and the app turns it into
a response. ``reason`` is the stable field clients branch on; ``title`` and ``detail`` are prose.

Reasons: unauthorized, invalid_json, invalid_body (with ``errors``), body_too_large,
unsupported_media_type, invalid_query, invalid_cursor, not_found, method_not_allowed,
alias_taken, invalid_code, domain_not_allowed, immutable_field, too_many_items, claim_timeout,
unavailable, internal_error — and every destination refusal of
:func:`clickwire.destinations.check_destination` (blocklisted, private_ip, ...).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """A refusal with an HTTP status, a machine-readable reason and optional extra members."""

    def __init__(self, status: int, reason: str, detail: str = "", **extra: Any) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The problem document as a dict (also used for per-item results of bulk requests)."""
        doc: dict[str, Any] = {
            "type": f"https://clickwire.dev/problems/{self.reason}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "reason": self.reason,
        }
        if self.detail:
            doc["detail"] = self.detail
        doc.update(self.extra)
        return doc

    def response(self) -> Response:
        """The problem as an HTTP response."""
        headers = {"WWW-Authenticate": 'Bearer realm="clickwire"'} if self.status == 401 else None
        return Response(orjson.dumps(self.body()), status_code=self.status, media_type=PROBLEM_JSON,
                        headers=headers)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; branch on `reason`.",
    "required": ["type", "title", "status", "reason"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "reason": {"type": "string", "description": "Machine-readable cause, e.g. alias_taken, blocklisted."},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"loc": {"type": "array"}, "msg": {"type": "string"}, "type": {"type": "string"}},
            },
        },
    },
}


def problem_ref(description: str) -> dict[str, Any]:
    """An OpenAPI response object whose body is a problem document."""
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
