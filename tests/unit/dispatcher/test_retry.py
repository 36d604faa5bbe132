"""Retry policy: outcome of each status or failure, the jittered schedule, Retry-After handling."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from services.dispatcher.retry import DEFAULT_SCHEDULE_S, RetryPolicy, classify, parse_retry_after
from services.dispatcher.ssrf import SSRFError

NOW = 1_700_000_000.0


def _rng() -> random.Random:
    return random.Random(7)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_success(status: int) -> None:
    """Any 2xx ends the delivery as a success."""
    assert classify(status, attempt=1, now=NOW, rng=_rng()).kind == "success"


def test_410_disables() -> None:
    """410 Gone disables the subscription instead of retrying."""
    outcome = classify(410, attempt=1, now=NOW, rng=_rng())
    assert (outcome.kind, outcome.status, outcome.delay_s) == ("disabled", 410, None)


@pytest.mark.parametrize("status", [301, 400, 401, 404, 418, 500, 502, 504])
def test_other_statuses_retry(status: int) -> None:
    """Every other status is retried after the schedule's next wait."""
    outcome = classify(status, attempt=1, now=NOW, rng=_rng())
    assert (outcome.kind, outcome.error_class) == ("retry", "http_status")
    assert outcome.delay_s is not None
    assert 4.0 <= outcome.delay_s <= 6.0


@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (httpx.ConnectTimeout("x"), "timeout"),
        (httpx.ReadTimeout("x"), "timeout"),
        (httpx.ConnectError("x"), "connect"),
        (httpx.RemoteProtocolError("x"), "network"),
        (SSRFError("private"), "ssrf"),
        (RuntimeError("bug"), "internal"),
    ],
)
def test_failures_retry_with_error_class(exc: BaseException, error_class: str) -> None:
    """Timeouts, connection errors and refusals retry, labelled for the attempts log, with status 0."""
    outcome = classify(exc, attempt=2, now=NOW, rng=_rng())
    assert (outcome.kind, outcome.status, outcome.error_class) == ("retry", 0, error_class)


def test_schedule_with_jitter_bounds() -> None:
    """After attempt n the wait is schedule[n] within ±20%, and the jitter actually varies."""
    rng = _rng()
    for attempt in range(1, len(DEFAULT_SCHEDULE_S)):
        base = DEFAULT_SCHEDULE_S[attempt]
        delays = {classify(500, attempt=attempt, now=NOW, rng=rng).delay_s for _ in range(50)}
        assert all(d is not None and base * 0.8 <= d <= base * 1.2 for d in delays)
        assert len(delays) > 1
    assert DEFAULT_SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def test_exhausted_is_dead() -> None:
    """The last attempt's failure is final: dead, with no next wait, whatever the failure."""
    last = RetryPolicy().max_attempts
    assert classify(500, attempt=last, now=NOW, rng=_rng()).kind == "dead"
    assert classify(httpx.ConnectError("x"), attempt=last, now=NOW, rng=_rng()).kind == "dead"
    assert classify(429, attempt=last, retry_after="1", now=NOW, rng=_rng()).kind == "dead"
    assert classify(500, attempt=last - 1, now=NOW, rng=_rng()).kind == "retry"


def test_custom_schedule() -> None:
    """A configured schedule and jitter replace the defaults."""
    policy = RetryPolicy(schedule_s=(0, 1, 2), jitter=0.0)
    assert classify(500, attempt=1, now=NOW, rng=_rng(), policy=policy).delay_s == 1
    assert classify(500, attempt=2, now=NOW, rng=_rng(), policy=policy).delay_s == 2
    assert classify(500, attempt=3, now=NOW, rng=_rng(), policy=policy).kind == "dead"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_honoured(status: int) -> None:
    """Retry-After in seconds on 429/503 replaces the schedule's wait, without jitter."""
    outcome = classify(status, attempt=3, retry_after="120", now=NOW, rng=_rng())
    assert (outcome.kind, outcome.delay_s) == ("retry", 120.0)


def test_retry_after_http_date_honoured() -> None:
    """Retry-After as an HTTP-date becomes the seconds until that date."""
    when = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert classify(503, attempt=1, retry_after=when, now=NOW, rng=_rng()).delay_s == pytest.approx(90)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 1.0), ("999999999", 36000.0), ("Sun, 06 Nov 1994 08:49:37 GMT", 1.0)],
    ids=["below-min", "above-max", "date-in-past"],
)
def test_retry_after_clamped(value: str, expected: float) -> None:
    """Retry-After is clamped to [1 s, 10 h] so a server can neither hammer nor stall the queue."""
    assert classify(429, attempt=1, retry_after=value, now=NOW, rng=_rng()).delay_s == expected


def test_retry_after_ignored_elsewhere_or_unparseable() -> None:
    """Retry-After on a 500, or an unparseable one on a 429, leaves the jittered schedule in charge."""
    for status, value in ((500, "120"), (429, "soon"), (429, "-5")):
        delay = classify(status, attempt=1, retry_after=value, now=NOW, rng=_rng()).delay_s
        assert delay is not None
        assert 4.0 <= delay <= 6.0


def test_parse_retry_after_forms() -> None:
    """Both RFC 9110 forms parse; garbage and zone-less dates do not."""
    assert parse_retry_after("30", NOW) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", NOW) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50", NOW) is None
    assert parse_retry_after("later", NOW) is None
    assert parse_retry_after(None, NOW) is None
