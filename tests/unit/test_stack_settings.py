"""Services started by the stack reach the stack's broker, whatever port it was given."""

from __future__ import annotations

from clickwire.settings import CommonSettings
from clickwire.stack import StackSettings


def test_services_get_the_bootstrap_of_a_broker_on_another_port() -> None:
    environ = {"CLICKWIRE_STACK_KAFKA_PORT": "29192"}
    env = StackSettings.from_env(environ).service_env(environ)
    assert env["CLICKWIRE_KAFKA_BOOTSTRAP"] == "127.0.0.1:29192"
    assert CommonSettings.from_env(env).bootstrap == "127.0.0.1:29192"  # what a service then reads


def test_an_explicit_bootstrap_is_kept() -> None:
    environ = {"CLICKWIRE_KAFKA_BOOTSTRAP": "kafka.internal:9092"}
    env = StackSettings.from_env(environ).service_env(environ)
    assert env["CLICKWIRE_KAFKA_BOOTSTRAP"] == "kafka.internal:9092"
