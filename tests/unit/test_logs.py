"""Library log lines repeated during an outage are collapsed, and the count of dropped ones is reported."""

from __future__ import annotations

import logging

import pytest

from clickwire.logs import RepeatFilter


def record(template: str, *args: object, logger: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(logger, logging.ERROR, __file__, 1, template, args, None)


def test_a_repeated_template_passes_once_per_interval_then_says_how_many_were_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("clickwire.logs.time.monotonic", lambda: clock[0])
    f = RepeatFilter(interval_s=10)
    passed = [f.filter(record("Failed fetch messages from %s: %s", 1, "NodeNotReady")) for _ in range(50)]
    assert passed == [True] + [False] * 49
    clock[0] += 10.5
    later = record("Failed fetch messages from %s: %s", 1, "NodeNotReady")
    assert f.filter(later)
    assert later.getMessage() == "Failed fetch messages from 1: NodeNotReady (49 more like this in the last 10 s)"


def test_different_templates_and_loggers_are_not_collapsed() -> None:
    f = RepeatFilter(interval_s=10)
    assert f.filter(record("Failed fetch messages from %s: %s", 1, "x"))
    assert f.filter(record("Unable to update metadata from %s", 1))
    assert f.filter(record("Failed fetch messages from %s: %s", 1, "x", logger="faust"))
    assert not f.filter(record("Unable to update metadata from %s", 2))
