"""Pages of a subscription's delivery attempts from ClickHouse (table clickwire.webhook_attempts).

Keyset pagination, newest first, on the table's sort key after the subscription:
``(ts_ms, event_id, attempt)``. The cursor is that triple of the last row served, so a page costs
the same at any depth and rows arriving meanwhile never shift a page. ``FINAL`` because the table
is a ReplacingMergeTree: an attempt written twice (an at-least-once retry of the sink) is listed once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Protocol

import orjson
from pydantic import BaseModel, Field

from services.api.problems import Problem
from services.dispatcher.payload import rfc3339_ms

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

# Timestamps are selected as ms ints so rows read the same through the sink's HTTP JSON or chdb.
# One query for both pages: the first page passes a cursor above every row (the largest DateTime64).
PAGE_SQL: Final = """
SELECT event_id, attempt, toUnixTimestamp64Milli(ts_ms) AS ts, status, latency_ms, outcome, error_class,
       response_excerpt, toUnixTimestamp64Milli(next_attempt_ms) AS next_ms
FROM clickwire.webhook_attempts FINAL
WHERE subscription_id = {sub:String}
  AND (ts_ms, event_id, attempt) < (fromUnixTimestamp64Milli({ts:Int64}, 'UTC'), {event_id:String},
                                    {attempt:UInt32})
ORDER BY ts_ms DESC, event_id DESC, attempt DESC
LIMIT {limit:UInt32}
"""
_TOP: Final = (4_102_444_800_000, "", 0)  # 2100-01-01: after every attempt a first page can hold


class Attempt(BaseModel):
    """One delivery attempt."""

    event_id: str
    attempt: int = Field(description="1 for the first try")
    at: datetime
    status: int = Field(description="HTTP status, 0 when there was no response")
    latency_ms: float
    outcome: str = Field(description="success, retry, dead or disabled")
    error_class: str | None = Field(description="timeout, connect, ssrf, http_status, ...")
    response_excerpt: str | None = Field(description="First bytes of the response body")
    next_attempt_at: datetime | None


class AttemptPage(BaseModel):
    """One page of attempts, newest first."""

    data: list[Attempt]
    next_cursor: str | None


class SqlSource(Protocol):
    """Anything that runs a parameterized read (`{name:Type}` placeholders): the sink's SqlClient, a store."""

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Return the rows of one read query as dicts."""
        ...


def encode_cursor(ts_ms: int, event_id: str, attempt: int) -> str:
    """Return the opaque cursor that continues after the row (ts_ms, event_id, attempt)."""
    raw = orjson.dumps([ts_ms, event_id, attempt])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, int]:
    """Return the (ts_ms, event_id, attempt) a cursor names, or raise a 400 ``invalid_cursor`` Problem."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, event_id, attempt = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise Problem(400, "invalid_cursor", "cursor is not one this API returned") from exc
    if not (isinstance(ts, int) and isinstance(event_id, str) and isinstance(attempt, int)
            and 0 <= attempt < 65536):
        raise Problem(400, "invalid_cursor", "cursor is not one this API returned")
    return ts, event_id, attempt


def parse_limit(text: str | None) -> int:
    """Return the page size asked for (default 50, 1..500), or raise a 400 ``invalid_query`` Problem."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise Problem(400, "invalid_query", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    next_ms = row.get("next_ms")
    return {
        "event_id": row["event_id"],
        "attempt": int(row["attempt"]),
        "at": rfc3339_ms(int(row["ts"])),
        "status": int(row["status"]),
        "latency_ms": float(row["latency_ms"]),
        "outcome": row["outcome"],
        "error_class": row.get("error_class"),
        "response_excerpt": row.get("response_excerpt"),
        "next_attempt_at": None if next_ms is None else rfc3339_ms(int(next_ms)),
    }


async def attempts_page(source: SqlSource, subscription_id: str, *, cursor: str | None,
                        limit: int) -> dict[str, Any]:
    """Return ``{"data": [...], "next_cursor": str | None}``, newest attempt first."""
    # One row more than asked tells whether another page exists without a second query.
    params: dict[str, Any] = {"sub": subscription_id, "limit": limit + 1}
    ts, event_id, attempt = decode_cursor(cursor) if cursor else _TOP
    params.update(ts=ts, event_id=event_id, attempt=attempt)
    rows = await source.query(PAGE_SQL, params)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(int(last["ts"]), str(last["event_id"]), int(last["attempt"]))
    return {"data": [_public(r) for r in page], "next_cursor": next_cursor}
