"""Retry policy: what one delivery attempt's result means and when the next attempt is due.

Pure: the clock and the random source are arguments, so every decision is reproducible in a test.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from typing import Literal

import httpx

from services.dispatcher.ssrf import SSRFError

OutcomeKind = Literal["success", "retry", "dead", "disabled"]

# Svix's schedule: attempt 1 at once, then these waits before attempts 2..8.
DEFAULT_SCHEDULE_S: tuple[float, ...] = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Waits before each attempt (``schedule_s[0]`` before the first), jitter and Retry-After clamp."""

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter: float = 0.2
    retry_after_min_s: float = 1.0
    retry_after_max_s: float = 10 * 3600.0

    def __post_init__(self) -> None:
        if not self.schedule_s:
            raise ValueError("schedule_s needs at least one entry (the first attempt)")
        if any(s < 0 for s in self.schedule_s) or not 0 <= self.jitter < 1:
            raise ValueError("waits must be >= 0 and jitter in [0, 1)")
        if not 0 <= self.retry_after_min_s <= self.retry_after_max_s:
            raise ValueError("need 0 <= retry_after_min_s <= retry_after_max_s")

    @property
    def max_attempts(self) -> int:
        """Return how many attempts a delivery gets in total."""
        return len(self.schedule_s)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do after an attempt; ``delay_s`` only for ``retry``, ``status`` 0 without a response."""

    kind: OutcomeKind
    status: int
    error_class: str | None = None
    delay_s: float | None = None


def jittered(base_s: float, jitter: float, rng: random.Random) -> float:
    """Return ``base_s`` moved uniformly within ±``jitter`` of itself."""
    return base_s * (1 + rng.uniform(-jitter, jitter))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the wait a Retry-After header asks for (delta-seconds or HTTP-date), None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110 dates are GMT; a zone-less date is not one of its three formats
    return max(0.0, when.timestamp() - now)


def error_class_of(exc: BaseException) -> str:
    """Return the attempt log's error_class for an exception raised while delivering."""
    if isinstance(exc, SSRFError):
        return "ssrf"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.ConnectError | ConnectionError):
        return "connect"
    if isinstance(exc, httpx.TransportError | OSError):
        return "network"
    return "internal"


def classify(
    result: int | BaseException,
    *,
    attempt: int,
    retry_after: str | None = None,
    now: float,
    rng: random.Random,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Outcome:
    """Return the outcome of attempt number ``attempt`` (1-based) that ended with a status or an exception."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if isinstance(result, BaseException):
        status, error_class = 0, error_class_of(result)
    else:
        status, error_class = result, None
        if 200 <= status < 300:
            return Outcome("success", status)
        if status == 410:
            # Gone: the endpoint says it will never want these again (Svix, Stripe and GitHub agree).
            return Outcome("disabled", status, "http_status")
        error_class = "http_status"

    if attempt >= policy.max_attempts:
        return Outcome("dead", status, error_class)
    delay = jittered(policy.schedule_s[attempt], policy.jitter, rng)
    if status in RETRY_AFTER_STATUSES:
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            # The server knows its own recovery better than our schedule does; the clamp stops a
            # hostile or buggy value from stalling the subscription's FIFO or hammering it.
            delay = min(max(asked, policy.retry_after_min_s), policy.retry_after_max_s)
    return Outcome("retry", status, error_class, delay)
