"""Settings: strict parsing, one-line errors naming the variable, secrets that never print."""

from __future__ import annotations

import pytest

from clickwire.settings import CommonSettings, Env, Secret, SettingsError


def test_defaults_point_at_the_local_broker() -> None:
    """With nothing set, services talk to the local stack's broker."""
    s = CommonSettings.from_env({})
    assert s.kafka_bootstrap == ("127.0.0.1:9092",)
    assert s.clickhouse_url is None


@pytest.mark.parametrize("value", ["nonsense", "host:", ":9092", "host:99999", "a:1,,b", "host:port"])
def test_malformed_bootstrap_names_the_variable(value: str) -> None:
    """A bootstrap that is not host:port fails with one line naming CLICKWIRE_KAFKA_BOOTSTRAP."""
    with pytest.raises(SettingsError) as info:
        CommonSettings.from_env({"CLICKWIRE_KAFKA_BOOTSTRAP": value})
    message = str(info.value)
    assert message.startswith("CLICKWIRE_KAFKA_BOOTSTRAP=")
    assert "host:port" in message
    assert "\n" not in message


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("ON", True), ("no", False),
                                               ("0", False), ("False", False)])
def test_booleans_are_strict(raw: str, expected: bool) -> None:
    """Only the documented words parse, and 'False' is false (unlike bool('False'))."""
    assert Env({"X": raw}).bool("X", not expected) is expected


def test_unknown_boolean_word_is_an_error() -> None:
    """'maybe' is not silently true or false."""
    with pytest.raises(SettingsError, match="X='maybe': expected true or false"):
        Env({"X": "maybe"}).bool("X", False)


def test_integer_bounds_are_enforced() -> None:
    """An integer outside its range names the range."""
    with pytest.raises(SettingsError, match="between 1 and 10"):
        Env({"N": "11"}).int("N", 5, lo=1, hi=10)
    assert Env({"N": "7"}).int("N", 5, lo=1, hi=10) == 7


def test_missing_required_value_is_named() -> None:
    """A required setting that is unset says <unset>."""
    with pytest.raises(SettingsError, match=r"REQ=<unset>"):
        Env({}).str("REQ")


def test_secret_never_prints() -> None:
    """A Secret's str and repr hide the value, and so does a dataclass holding it."""
    secret = Env({"S": "hunter2"}).secret("S")
    assert secret.get() == "hunter2"
    assert "hunter2" not in str(secret)
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in repr(Secret("hunter2"))


def test_urls_are_checked() -> None:
    """A ClickHouse URL must be http(s)://host."""
    with pytest.raises(SettingsError, match="CLICKWIRE_CLICKHOUSE_URL"):
        CommonSettings.from_env({"CLICKWIRE_CLICKHOUSE_URL": "clickhouse"})
    s = CommonSettings.from_env({"CLICKWIRE_CLICKHOUSE_URL": "http://default:pw@127.0.0.1:8123/"})
    assert s.clickhouse_url is not None


def test_networks_parse_cidrs() -> None:
    """An allow-list of networks parses CIDRs and rejects garbage."""
    nets = Env({"NETS": "127.0.0.1/32, ::1/128"}).networks("NETS")
    assert [str(n) for n in nets] == ["127.0.0.1/32", "::1/128"]
    with pytest.raises(SettingsError, match="CIDR"):
        Env({"NETS": "not-a-net"}).networks("NETS")
