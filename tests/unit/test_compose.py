"""docker-compose.yml cannot run here, so it is checked against the code it starts."""

from __future__ import annotations

import importlib

import pytest
import typer.main
import yaml

from clickwire.settings import REPO_ROOT, SETTINGS_MODULES, Env

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _cli_commands() -> set[str]:
    from clickwire import cli

    cli._register()
    group = typer.main.get_command(cli.app)
    return set(group.commands)  # type: ignore[attr-defined]


def _accepted_variables() -> set[str]:
    for entry in SETTINGS_MODULES:
        module, cls = entry.split(":")
        getattr(importlib.import_module(module), cls).from_env({})
    return set(Env.seen)


def _clickwire_services() -> dict[str, dict]:
    return {k: v for k, v in COMPOSE["services"].items() if v.get("image", "").startswith("clickwire")}


def test_every_service_command_exists_in_the_cli() -> None:
    """Each clickwire container runs a command the `clickwire` CLI has."""
    commands = _cli_commands()
    services = _clickwire_services()
    assert {"api", "redirector", "enricher", "sink", "dispatcher", "init"} <= set(services)
    for svc_name, svc in services.items():
        assert svc["command"][0] in commands, f"{svc_name}: `clickwire {svc['command'][0]}` does not exist"


def test_every_variable_set_is_accepted_by_the_settings() -> None:
    """Each CLICKWIRE_* variable the compose file sets is read by some settings class."""
    accepted = _accepted_variables()
    for svc_name, svc in _clickwire_services().items():
        for var in svc.get("environment", {}):
            assert var in accepted, f"{svc_name} sets {var}, which no settings class reads"


@pytest.mark.parametrize("image", ["kafka", "clickhouse"])
def test_official_images_have_healthchecks(image: str) -> None:
    """Kafka and ClickHouse use the official images and report health before services start."""
    svc = COMPOSE["services"][image]
    assert svc["image"].split(":")[0] in {"apache/kafka", "clickhouse/clickhouse-server"}
    assert "healthcheck" in svc
