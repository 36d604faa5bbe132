"""Request shaping without a server: strict validation, cursors, settings, problems."""

from __future__ import annotations

import pytest

from clickwire.settings import SettingsError
from services.api.body import validate
from services.api.links import LinkCreate, LinkPatch, decode_cursor, encode_cursor
from services.api.problems import Problem
from services.api.settings import ApiSettings


def test_settings_defaults_and_errors() -> None:
    """from_env({}) works with every default, and a bad value names its variable."""
    s = ApiSettings.from_env({})
    assert (s.host, s.port, s.default_domain, s.max_body_bytes) == ("127.0.0.1", 8000, "clk.localhost", 2 * 1024 * 1024)
    assert s.claim_grace_s > s.claim_timeout_s
    with pytest.raises(SettingsError, match="CLICKWIRE_API_PORT"):
        ApiSettings.from_env({"CLICKWIRE_API_PORT": "99999"})
    with pytest.raises(SettingsError, match="CLICKWIRE_API_DEFAULT_DOMAIN"):
        ApiSettings.from_env({"CLICKWIRE_API_DEFAULT_DOMAIN": "not a domain"})


def test_domain_allow_list() -> None:
    """With CLICKWIRE_API_DOMAINS set, only those domains and the default are accepted."""
    s = ApiSettings.from_env({"CLICKWIRE_API_DOMAINS": "go.example.com"})
    assert s.domain_allowed("go.example.com")
    assert s.domain_allowed("clk.localhost")
    assert not s.domain_allowed("evil.example.com")
    assert ApiSettings.from_env({}).domain_allowed("any.example.com")


@pytest.mark.parametrize("data", [
    {"destination": 1}, {"destination": "https://e.com/", "max_clicks": "1"},
    {"destination": "https://e.com/", "max_clicks": True}, {"destination": "https://e.com/", "tags": "a"},
    {"destination": "https://e.com/", "extra": None}, {"destination": "https://e.com/", "max_clicks": -1},
    {"destination": "https://e.com/", "bot_policy": "ignore"},
])
def test_strict_validation_refuses(data: dict[str, object]) -> None:
    """Wrong JSON types, unknown fields and out-of-range values are a 422 Problem."""
    with pytest.raises(Problem) as info:
        validate(LinkCreate, data)
    assert (info.value.status, info.value.reason) == (422, "invalid_body")
    assert info.value.extra["errors"]


def test_patch_knows_what_was_sent() -> None:
    """A patch distinguishes an absent field from an explicit null."""
    patch = validate(LinkPatch, {"max_clicks": None})
    assert patch.model_fields_set == {"max_clicks"}


def test_cursor_round_trip_and_garbage() -> None:
    """A cursor decodes to what was encoded; anything else is a 400 invalid_cursor."""
    assert decode_cursor(encode_cursor(123, "lnk_x")) == (123, "lnk_x")
    for bad in ("", "!!!", encode_cursor(1, "x")[:-3], "WzEsMl0"):
        with pytest.raises(Problem) as info:
            decode_cursor(bad)
        assert info.value.reason == "invalid_cursor"
