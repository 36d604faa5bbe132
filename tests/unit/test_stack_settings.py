"""Services started by the stack reach the stack's broker, whatever port it was given; cluster ids."""

from __future__ import annotations

import base64
import uuid

import pytest

from clickwire import stack
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


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id starting with "-" reads as an option to Kafka's storage tool: it is drawn again."""
    dash_first = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64 of 0xF8... starts with "-"
    plain = uuid.UUID(bytes=bytes(range(16)))
    draws = iter([dash_first, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))  # the module clickwire.stack calls
    cluster_id = stack.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).rstrip(b"=").decode()
    assert len(cluster_id) == 22
    assert not cluster_id.startswith("-")
