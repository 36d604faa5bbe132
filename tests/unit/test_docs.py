"""Docs that must stay true to the code."""

from __future__ import annotations

import subprocess

from clickwire.settings import REPO_ROOT, load_all_settings


def test_operations_lists_every_setting_with_its_default() -> None:
    """docs/operations.md has a row for every CLICKWIRE_* variable, showing the code's default."""
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    for var, (_expected, default) in load_all_settings().items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{var}` |")), None)
        assert row is not None, f"{var} is missing from docs/operations.md (run `clickwire settings --markdown`)"
        if default and default != "per service":
            assert f"`{default}`" in row, f"{var}: docs show {row!r}, code default is {default!r}"


def test_readme_quick_start_has_exactly_the_two_commands() -> None:
    """The README's Quick start is `make run` and `make test`, and both targets exist."""
    readme = (REPO_ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    dry = subprocess.run(["make", "-n", "run", "test"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert dry.returncode == 0, dry.stderr


def test_every_cli_command_in_the_readme_exists() -> None:
    """Each `clickwire <command>` the README mentions is a real command."""
    import re

    import typer.main

    from clickwire import cli

    cli._register()
    group = typer.main.get_command(cli.app)
    known = set(group.commands)  # type: ignore[attr-defined]
    readme = (REPO_ROOT / "README.md").read_text()
    mentioned = set(re.findall(r"`clickwire ([a-z]+)", readme))
    assert mentioned, "the README names no clickwire command"
    assert mentioned <= known, f"README mentions unknown commands: {sorted(mentioned - known)}"
