"""``clickwire dispatcher``: the router and/or the deliverer, with /health and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import typer

from clickwire import logs, service
from clickwire.cli import app, one_line_errors
from clickwire.errors import TopicsMissing
from clickwire.kafka import STREAM_DELIVERY_TIMEOUT_MS, check_topics, make_producer, wait_for_broker
from clickwire.observability import HealthServer
from clickwire.topics import Topic, name
from services.dispatcher.settings import ROLES, DispatcherSettings

ROUTER_TOPICS = (Topic.CLICKS_ENRICHED, Topic.LINKS, Topic.EVENTS_DERIVED, Topic.WEBHOOK_SUBSCRIPTIONS,
                 Topic.WEBHOOK_OUTBOX, Topic.DEAD_LETTERS)
DELIVERER_TOPICS = (Topic.WEBHOOK_SUBSCRIPTIONS, Topic.WEBHOOK_OUTBOX, Topic.WEBHOOK_RETRY,
                    Topic.WEBHOOK_ATTEMPTS, Topic.WEBHOOK_DEAD, Topic.DEAD_LETTERS)


async def check_dependencies(settings: DispatcherSettings, role: str) -> None:
    """Raise BrokerUnavailable or TopicsMissing (one line each) unless the role can start."""
    common = settings.common
    await wait_for_broker(common)
    needed = {*(ROUTER_TOPICS if role in ("all", "router") else ()),
              *(DELIVERER_TOPICS if role in ("all", "deliverer") else ())}
    found = await check_topics(common, sorted(needed))
    if role in ("all", "deliverer"):
        outbox = found[name(Topic.WEBHOOK_OUTBOX, common.topic_prefix)]
        retry = found[name(Topic.WEBHOOK_RETRY, common.topic_prefix)]
        if outbox != retry:
            # Parked records go to the retry partition numbered like their outbox partition.
            raise TopicsMissing(f"webhooks.retry has {retry} partitions, webhooks.outbox {outbox}: they must match")


async def serve(settings: DispatcherSettings, role: str, stop: asyncio.Event,
                on_ready: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Run the router and/or deliverer until ``stop``; used by the CLI, tests and the benchmark."""
    from services.dispatcher.deliverer import Deliverer
    from services.dispatcher.router import Router
    from services.dispatcher.subscriptions import Subscriptions
    from services.dispatcher.transport import VettedTransport

    common = settings.common
    subs = Subscriptions(common)
    # Outbox records are on the click -> webhook path: a short linger (the enricher's too) instead of 5 ms.
    # Rides out a broker outage of up to STREAM_DELIVERY_TIMEOUT_MS instead of failing its writes.
    producer = make_producer(common, linger_ms=2, request_timeout_ms=STREAM_DELIVERY_TIMEOUT_MS)
    transport = VettedTransport(
        allow_nets=settings.allow_nets, allowed_ports=settings.allowed_ports,
        connect_timeout_s=settings.connect_timeout_s, total_timeout_s=settings.total_timeout_s,
        max_connections=settings.max_connections,
    )
    router = Router(common, subs, producer) if role in ("all", "router") else None
    deliverer = Deliverer(settings, subs, producer, transport) if role in ("all", "deliverer") else None

    async def health() -> dict[str, object]:
        detail: dict[str, object] = {"ok": True, "role": role, "subscriptions": len(subs.table)}
        if router is not None:
            detail["router"] = router.health()
        if deliverer is not None:
            detail["deliverer"] = d = deliverer.health()
            detail["ok"] = bool(d["ok"])
        for task in tasks:
            if task.done():
                detail["ok"] = False
        return detail

    tasks: list[asyncio.Task[None]] = []
    server = HealthServer(health, port=settings.metrics_port)
    await server.start()
    await producer.start()
    try:
        await subs.start()
        if router is not None:
            tasks.append(asyncio.create_task(router.run(stop), name="router"))
        if deliverer is not None:
            tasks.append(asyncio.create_task(deliverer.run(stop), name="deliverer"))
        if on_ready is not None:
            await on_ready(server.port)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # one part failing stops the other: a half dispatcher should be restarted whole
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
        for task in tasks:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        await subs.stop()
        await transport.aclose()
        await server.stop()


@app.command("dispatcher")
@one_line_errors
def dispatcher(
    role: str = typer.Option(None, "--role", help="router, deliverer or all (default CLICKWIRE_DISPATCHER_ROLE)"),
) -> None:
    """Route events to subscriptions and deliver signed webhooks, in order per subscription."""
    settings = DispatcherSettings.from_env()
    chosen = (role or settings.role).lower()
    if chosen not in ROLES:
        raise typer.BadParameter(f"--role must be one of {', '.join(ROLES)}")
    log = logs.configure("dispatcher", settings.common.log_level, settings.common.log_format)
    asyncio.run(check_dependencies(settings, chosen))
    log.info("dispatcher starting", role=chosen, metrics_port=settings.metrics_port)

    async def main(stop: asyncio.Event) -> None:
        await serve(settings, chosen, stop)

    service.run(main)
