"""The ``clickwire`` command: one entry point for the stack, every service and the tools.

Each sub-command is a thin wrapper: it reads settings, checks dependencies and hands over to
library code. Expected failures (bad settings, broker down) print one line and exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer

from clickwire.errors import ClickwireError
from clickwire.settings import SettingsError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="clickwire",
    help="Real-time link-click events: redirector, enricher, dispatcher, API and their stack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def one_line_errors(func: F) -> F:
    """Turn expected failures into one line on stderr and exit status 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ClickwireError, SettingsError) as exc:
            print(f"clickwire: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# Modules that add commands to `app` on import: each service owns its own entry point.
COMMAND_MODULES = (
    "clickwire.cli.stack",
    "clickwire.cli.tools",
    "clickwire.cli.demo",
    "services.api.cli",
    "services.redirector.cli",
    "services.enricher.cli",
    "services.sink.cli",
    "services.dispatcher.cli",
    "services.patterns.cli",
)


def _register() -> None:
    for module in COMMAND_MODULES:
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            # A service not built yet is simply absent; a broken import inside it is an error.
            if exc.name is None or not module.startswith(exc.name):
                raise


def main() -> None:
    """Console-script entry point."""
    _register()
    app()
