"""Everything a request handler needs, built once per API process: ``ApiContext``.

Resource modules (links, keys, webhooks, dashboard) take the context in ``routes(ctx)`` and use:
``ctx.settings`` (ApiSettings), ``ctx.common``, ``ctx.producer`` (started, idempotent),
``ctx.links`` / ``ctx.keys`` (TopicTables following the links and api.keys topics),
``await ctx.authenticate(request) -> workspace_id`` (raises a 401 Problem), and
``ctx.background(coro)`` to run a task for the lifetime of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from starlette.requests import Request

from clickwire.codec import codec_for
from clickwire.destinations import Blocklist, Shorteners, default_shorteners
from clickwire.follow import TopicTable
from clickwire.kafka import make_producer
from clickwire.links import Link
from clickwire.topics import Topic, name
from services.api.claims import ClaimBook
from services.api.keys import ApiKey, decode_key, verify
from services.api.problems import Problem
from services.api.settings import ApiSettings

log = structlog.get_logger(__name__)
AUTH_FAILURES = Counter("clickwire_api_auth_failures_total", "Requests refused for a missing or bad API key")


class ApiContext:
    """Shared state of one API process: settings, producer, followed tables, claims, blocklist."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.common = settings.common
        self.producer: AIOKafkaProducer = make_producer(self.common, linger_ms=0)
        self.links_topic = name(Topic.LINKS, self.common.topic_prefix)
        self.link_codec = codec_for(Topic.LINKS, self.common.schema_registry_url)
        self.links: TopicTable[Link] = TopicTable(
            self.common, Topic.LINKS, self._decode_link, on_change=self._link_changed)
        self.keys: TopicTable[ApiKey] = TopicTable(self.common, Topic.API_KEYS, decode_key(self.common))
        self.link_ids: dict[str, str] = {}  # link id -> "domain/code", for GET /v1/links/{id}
        self._deleted_ids: dict[str, float] = {}  # link id -> when it left the table (claims liveness)
        self._waiters: dict[str, list[tuple[Callable[[Link | None], bool], asyncio.Future[None]]]] = {}
        self.blocklist = Blocklist(settings.blocklist_path) if settings.blocklist_path.exists() else Blocklist()
        self.shorteners: Shorteners = default_shorteners()
        self.claims = ClaimBook(self.common, self.producer, settings.instance_id,
                                link_at=self.link_id_at, deleted=self.was_deleted,
                                timeout_s=settings.claim_timeout_s, grace_s=settings.claim_grace_s)
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = False
        # Set when the server starts its graceful stop: long-lived responses (the dashboard's event
        # streams) end on it instead of holding the stop until uvicorn's graceful timeout.
        self.stopping = asyncio.Event()

    def _decode_link(self, raw: bytes) -> Link:
        return Link.from_avro(self.link_codec.decode(raw))

    def _link_changed(self, key: str, old: Link | None, new: Link | None) -> None:
        if old is not None and (new is None or new.id != old.id):
            self.link_ids.pop(old.id, None)
            self._deleted_ids[old.id] = time.monotonic()
        if new is not None:
            self.link_ids[new.id] = key
        for predicate, fut in self._waiters.pop(key, []):
            if fut.done():
                continue
            if predicate(new):
                fut.set_result(None)
            else:
                self._waiters.setdefault(key, []).append((predicate, fut))

    def link_id_at(self, key: str) -> str | None:
        """The id of the link currently at domain/code, if any."""
        link = self.links.get(key)
        return None if link is None else link.id

    def was_deleted(self, link_id: str) -> bool:
        """True when a link with this id was on the table and has since left it."""
        return link_id in self._deleted_ids

    def link_by_id(self, link_id: str) -> Link | None:
        """The live link with this id, or None."""
        key = self.link_ids.get(link_id)
        return None if key is None else self.links.get(key)

    async def wait_applied(self, key: str, predicate: Callable[[Link | None], bool], timeout_s: float = 5.0) -> bool:
        """Wait until the followed table shows key in the state predicate accepts (read-your-writes)."""
        if predicate(self.links.get(key)):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append((predicate, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False

    async def authenticate(self, request: Request) -> str:
        """The workspace id of the request's API key; raises a 401 Problem when missing or invalid."""
        header = request.headers.get("authorization")
        if not header:
            AUTH_FAILURES.inc()
            raise Problem(401, "unauthorized", "missing Authorization: Bearer <API key> header")
        scheme, _, token = header.partition(" ")
        key = verify(token.strip(), self.keys) if scheme.lower() == "bearer" else None
        if key is None:
            AUTH_FAILURES.inc()
            raise Problem(401, "unauthorized", "invalid or revoked API key")
        return key.workspace_id

    async def publish_link(self, link: Link) -> None:
        """Write a link version to the links topic and wait until the broker has it."""
        await self.producer.send_and_wait(self.links_topic, self.link_codec.encode(link.to_avro()),
                                          key=link.key.encode())

    async def publish_tombstone(self, key: str) -> None:
        """Delete domain/code from the links topic and wait until the broker has it."""
        await self.producer.send_and_wait(self.links_topic, None, key=key.encode())

    def background(self, coro: Coroutine[Any, Any, Any], task_name: str) -> None:
        """Run a coroutine for the lifetime of the process; cancelled on stop."""
        self._tasks.append(asyncio.create_task(coro, name=task_name))

    async def start(self) -> None:
        """Start the producer, load the tables and follow the claims partition."""
        await self.producer.start()
        await self.links.start()
        await self.keys.start()
        await self.claims.start()
        await self.links.wait_loaded()
        await self.keys.wait_loaded()
        self.background(self._prune_deleted(), "prune-deleted-ids")
        self.started = True

    async def _prune_deleted(self) -> None:
        while True:
            await asyncio.sleep(10)
            cutoff = time.monotonic() - 2 * self.settings.claim_grace_s
            for link_id, at in list(self._deleted_ids.items()):
                if at < cutoff:
                    del self._deleted_ids[link_id]

    async def stop(self) -> None:
        """Stop background work, the followers and the producer (flushing what is in flight)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.claims.stop()
        await self.keys.stop()
        await self.links.stop()
        await self.producer.stop()

    async def health(self) -> dict[str, Any]:
        """What /health reports."""
        return {"ok": self.started and self.links.loaded and self.keys.loaded,
                "links": len(self.links), "keys": len(self.keys), "instance": self.settings.instance_id}
