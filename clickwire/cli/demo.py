"""``clickwire up``, ``clickwire demo``, ``clickwire simulate`` and ``clickwire receiver``."""

from __future__ import annotations

import asyncio
import os
import sys

import typer
from rich.console import Console

from clickwire.cli import app, one_line_errors

console = Console(stderr=True)


@app.command("up")
@one_line_errors
def up_cmd() -> None:
    """Start the stack and every service in the background (no demo); `clickwire stack down` stops all."""
    from clickwire import orchestrate
    from clickwire.stack import StackSettings, up

    stack = StackSettings.from_env()

    async def run() -> None:
        await up(stack, lambda m: console.print(f"[bold cyan]stack[/] {m}"))
        await orchestrate.up(stack.common.home, stack.service_env(os.environ),
                             progress=lambda m: console.print(f"[bold green]up[/] {m}"))

    asyncio.run(run())
    console.print("[bold green]up[/] every service is healthy; logs in "
                  f"{stack.common.home / 'logs'}; `clickwire stack status` shows them")


@app.command("demo")
@one_line_errors
def demo_cmd(
    rate: float = typer.Option(40.0, help="Clicks per second the simulator sends (4x during spikes)."),
    duration: float | None = typer.Option(
        None, help="Seconds to run; default: until Ctrl-C on a terminal, 60 s otherwise."),
) -> None:
    """The whole product live: stack, services, links, webhooks to a built-in receiver, traffic, live view."""
    from clickwire.demo import run_demo

    if duration is None and not sys.stdout.isatty():
        duration = 60.0
    try:
        stats = asyncio.run(run_demo(rate=rate, duration_s=duration))
    except KeyboardInterrupt:
        console.print("[bold magenta]demo[/] stopped")
        return
    if stats.server_errors:
        raise typer.Exit(1)


@app.command("simulate")
@one_line_errors
def simulate_cmd(
    links: list[str] = typer.Argument(None, help="Links to click as domain/code (not for failing-destination)."),
    url: str = typer.Option("http://127.0.0.1:8080", help="The redirector's base URL."),
    rate: float = typer.Option(100.0, help="Clicks per second."),
    duration: float = typer.Option(10.0, help="Seconds."),
    country: str | None = typer.Option(None, help="Send every human click from this country (a spike)."),
    seed: int = typer.Option(7, help="Random seed (same seed, same traffic)."),
    pattern: str = typer.Option("steady", help="steady, spike (one country, --country), bot-burst, or "
                                "failing-destination (a site on 127.0.0.1:--port, 200 then 503)."),
    port: int = typer.Option(9300, help="failing-destination: the port to serve on."),
    healthy: float = typer.Option(5.0, help="failing-destination: seconds of 200 before it answers 503."),
) -> None:
    """Send realistic click traffic (humans, link previews, email scanners, crawlers, one hammering IP)."""
    from clickwire.simulate import FAILING_DESTINATION, Target, simulate

    if pattern == FAILING_DESTINATION:
        asyncio.run(_failing_destination(port, healthy, duration))
        return
    if not links:
        raise typer.BadParameter("name at least one link as domain/code", param_hint="LINKS")
    targets = []
    for item in links:
        domain, _, code = item.partition("/")
        if not code:
            raise typer.BadParameter(f"{item!r}: expected domain/code", param_hint="LINKS")
        targets.append(Target(domain, code))
    stats = asyncio.run(simulate(url, targets, rate=rate, duration_s=duration, seed=seed, country=country,
                                    pattern=pattern))
    print(f"sent {stats.sent} redirected {stats.redirected} errors {stats.errors} "
          f"by status {dict(stats.by_status)} by kind {dict(stats.by_kind)}")


async def _failing_destination(port: int, healthy_s: float, duration_s: float) -> None:
    from clickwire.simulate import FailingDestination

    site = FailingDestination(healthy_s)
    runner = await site.serve("127.0.0.1", port)
    print(f"destination http://127.0.0.1:{port}/ answers 200 for {healthy_s:g} s, then 503, "
          f"for {duration_s:g} s in all; point a link at it (the checker needs "
          f"CLICKWIRE_WEBHOOK_ALLOW_NETS=127.0.0.1/32)", flush=True)
    try:
        await asyncio.sleep(duration_s)  # the site's lifetime is what the user asked for
    finally:
        await runner.cleanup()
    print(f"answered {dict(site.answers)}")


@app.command("receiver")
@one_line_errors
def receiver_cmd(
    secret: list[str] = typer.Option(..., "--secret", "-s", envvar="CLICKWIRE_RECEIVER_SECRET",
                                     help="whsec_ secret(s) to verify with."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(9200),
    quiet: bool = typer.Option(False, help="Do not print each event."),
) -> None:
    """A webhook endpoint that verifies signatures, drops duplicates, checks order and prints events."""
    import orjson

    from clickwire.receiver import Receiver, serve

    def show(event: dict[str, object], latency_ms: float) -> None:
        if not quiet:
            print(orjson.dumps({"latency_ms": round(latency_ms, 1), **event}).decode(), flush=True)

    receiver = Receiver(secret, on_event=show)

    async def run() -> None:
        runner = await serve(receiver, host, port)
        console.print(f"receiver listening on http://{host}:{port}/ (stats at /stats); Ctrl-C stops")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        s = receiver.stats
        console.print(f"accepted {s.accepted}, duplicates {s.duplicates}, bad signatures {s.bad_signatures}, "
                      f"out of order {s.out_of_order}")
