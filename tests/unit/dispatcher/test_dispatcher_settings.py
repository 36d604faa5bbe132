"""DispatcherSettings: defaults, durations, schedules, ports, and one-line errors."""

from __future__ import annotations

import pytest

from clickwire.settings import SettingsError
from services.dispatcher.retry import DEFAULT_SCHEDULE_S
from services.dispatcher.settings import DispatcherSettings, parse_duration


def test_defaults_need_no_environment() -> None:
    """Every variable has a default: Svix's schedule, 5 days to disable, 3 s / 10 s timeouts, no allow-list."""
    s = DispatcherSettings.from_env({})
    assert s.retry.schedule_s == DEFAULT_SCHEDULE_S
    assert s.disable_after_s == 5 * 86400
    assert (s.connect_timeout_s, s.total_timeout_s) == (3.0, 10.0)
    assert s.allow_nets == ()
    assert s.allowed_ports is None
    assert s.metrics_port == 9103


def test_schedule_ports_and_durations_parse() -> None:
    """Test schedules, port ranges and unit suffixes are read as numbers."""
    s = DispatcherSettings.from_env({"CLICKWIRE_DISPATCHER_RETRY_SCHEDULE": "0,0.2,5m",
                                     "CLICKWIRE_WEBHOOK_PORTS": "443,8000-8002",
                                     "CLICKWIRE_DISPATCHER_DISABLE_AFTER": "2h"})
    assert s.retry.schedule_s == (0.0, 0.2, 300.0)
    assert s.allowed_ports == frozenset({443, 8000, 8001, 8002})
    assert s.disable_after_s == 7200
    assert parse_duration("250ms") == 0.25


@pytest.mark.parametrize(("name", "value"), [
    ("CLICKWIRE_DISPATCHER_RETRY_SCHEDULE", "soon"),
    ("CLICKWIRE_WEBHOOK_PORTS", "70000"),
    ("CLICKWIRE_DISPATCHER_DISABLE_AFTER", "forever"),
    ("CLICKWIRE_DISPATCHER_ROLE", "both"),
    ("CLICKWIRE_DISPATCHER_RETRY_JITTER", "1.5"),
])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    """A malformed value fails with one line naming the variable."""
    with pytest.raises(SettingsError) as err:
        DispatcherSettings.from_env({name: value})
    assert str(err.value).startswith(name + "=")
    assert "\n" not in str(err.value)
