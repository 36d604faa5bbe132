"""``clickwire api`` (the control API) and ``clickwire keys create|list|revoke``."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

import typer

from clickwire.cli import app, one_line_errors
from clickwire.errors import StartupError
from clickwire.follow import TopicTable
from clickwire.kafka import check_topics, make_producer, wait_for_broker
from clickwire.logs import configure
from clickwire.service import run
from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from services.api.keys import WORKSPACE_RE, ApiKey, decode_key, new_key, publish_key, revoked
from services.api.settings import ApiSettings

API_TOPICS = (Topic.LINKS, Topic.API_KEYS, Topic.LINK_CLAIMS)


@app.command("api")
@one_line_errors
def api_cmd() -> None:
    """Serve the control API (links, keys, webhooks) on CLICKWIRE_API_HOST:CLICKWIRE_API_PORT."""
    from services.api.app import ApiServer
    from services.api.context import ApiContext

    settings = ApiSettings.from_env()
    log = configure("api", settings.common.log_level, settings.common.log_format)

    async def main(stop: asyncio.Event) -> None:
        await wait_for_broker(settings.common)
        await check_topics(settings.common, API_TOPICS)
        ctx = ApiContext(settings)
        await ctx.start()
        server = ApiServer(ctx, settings.host, settings.port)
        try:
            try:
                await server.start()
            except OSError as exc:
                raise StartupError(f"CLICKWIRE_API_HOST/PORT={settings.host}:{settings.port}: "
                                   f"cannot listen ({exc.strerror or exc})") from None
            log.info("api listening", host=settings.host, port=server.port, instance=settings.instance_id,
                     links=len(ctx.links), keys=len(ctx.keys))
            while not stop.is_set() and not server.done:
                with_timeout = asyncio.create_task(stop.wait())
                await asyncio.wait({with_timeout}, timeout=1.0)
                with_timeout.cancel()
        finally:
            await server.stop()
            await ctx.stop()
            log.info("api stopped")

    run(main)


keys_app = typer.Typer(help="API keys per workspace, stored hashed on the api.keys topic.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


async def _load_keys(common: CommonSettings) -> dict[str, ApiKey]:
    await wait_for_broker(common)
    await check_topics(common, [Topic.API_KEYS])
    table: TopicTable[ApiKey] = TopicTable(common, Topic.API_KEYS, decode_key(common))
    await table.start()
    try:
        await table.wait_loaded()
        return dict(table.items())
    finally:
        await table.stop()


async def _publish(common: CommonSettings, key: ApiKey) -> None:
    producer = make_producer(common, linger_ms=0)
    await producer.start()
    try:
        await publish_key(common, producer, key)
    finally:
        await producer.stop()


@keys_app.command("create")
@one_line_errors
def keys_create(
    workspace: str = typer.Option(..., "--workspace", "-w", help="Workspace id, e.g. ws_acme."),
    key_name: str = typer.Option("", "--name", "-n", help="A label to recognise the key by."),
) -> None:
    """Create a key; prints the token once on stdout (only its hash is stored)."""
    if not WORKSPACE_RE.fullmatch(workspace):
        raise typer.BadParameter("expected 1-64 of [A-Za-z0-9_-]", param_hint="--workspace")
    common = CommonSettings.from_env()

    async def create() -> None:
        await wait_for_broker(common)
        await check_topics(common, [Topic.API_KEYS])
        key, token = new_key(workspace, key_name)
        await _publish(common, key)
        print(f"created key {key.id} for workspace {workspace} (shown once, store it now):", file=sys.stderr)
        print(token)

    asyncio.run(create())


@keys_app.command("list")
@one_line_errors
def keys_list(
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Only this workspace."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List keys (ids, workspaces, names, revoked) — never secrets or hashes."""
    keys = asyncio.run(_load_keys(CommonSettings.from_env()))
    rows = sorted((k for k in keys.values() if workspace is None or k.workspace_id == workspace),
                  key=lambda k: k.created_ms)
    for k in rows:
        created = datetime.fromtimestamp(k.created_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if as_json:
            print(json.dumps({"id": k.id, "workspace_id": k.workspace_id, "name": k.name,
                              "created_at": created, "revoked": k.revoked}))
        else:
            state = "revoked" if k.revoked else "active"
            print(f"{k.id}  {k.workspace_id}  {state:7}  {created}  {k.name}")


@keys_app.command("revoke")
@one_line_errors
def keys_revoke(key_id: str = typer.Argument(..., help="Key id: the token's part between cw_ and the dot.")) -> None:
    """Revoke a key: requests with it get 401 as soon as each API process sees the change."""
    common = CommonSettings.from_env()

    async def revoke() -> None:
        keys = await _load_keys(common)
        key = keys.get(key_id.removeprefix("cw_").split(".", 1)[0])
        if key is None:
            print(f"clickwire: no key {key_id!r}", file=sys.stderr)
            raise typer.Exit(1)
        if not key.revoked:
            await _publish(common, revoked(key))
        print(f"revoked {key.id} ({key.workspace_id})", file=sys.stderr)

    asyncio.run(revoke())
