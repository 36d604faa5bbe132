"""Structured logs: one JSON object per line on stderr, tagged with the service name."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(service: str, level: str = "info", fmt: str = "json") -> structlog.stdlib.BoundLogger:
    """Configure structlog and stdlib logging once for a process; return the service's logger."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiokafka, faust) log through stdlib: route them to the same JSON stream.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO) if level != "debug" else logging.DEBUG)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)
    return structlog.get_logger(service)  # type: ignore[no-any-return]


class RateLimited:
    """Lets a repeated log line through at most once per interval (poison messages, outages)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self.suppressed = 0

    def allow(self, key: str) -> bool:
        """True when a line with this key may be logged now."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self._interval:
            self._last[key] = now
            return True
        self.suppressed += 1
        return False


class RepeatFilter(logging.Filter):
    """Collapses a library's repeated log line (same logger, same message template) to one per interval.

    While the broker is down every aiokafka client logs the same connection error about ten times a
    second; the first line says it all. Later ones are counted, and the next line let through says how
    many were dropped, so an outage stays visible without filling the disk.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self._interval = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through unless the same template was let through less than an interval ago."""
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self._interval:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} more like this in the last {self._interval:g} s)"
            record.args = None
        if len(self._last) > 10_000:  # templates are few; this only guards against unbounded keys
            self._last.clear()
        return True
