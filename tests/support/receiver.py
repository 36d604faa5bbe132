"""A real webhook receiver on 127.0.0.1 for tests: verifies signatures, dedupes, records order, misbehaves on demand.

Every request is checked with the ``standardwebhooks`` package against ``secrets`` (each must verify
on its own when ``require_all`` is set, else any one). ``accepted`` lists the verified requests it
answered 2xx, in arrival order; ``events()`` is what a deduping receiver keeps: each webhook-id once.

Misbehaviour, set between or during tests:
- ``fail_ids[webhook_id] = n``: answer 500 to the first n requests with that id;
- ``status = 500 | 410 | ...``: answer that status to every request (None: 204);
- ``retry_after = (n, "2")``: answer 429 with that Retry-After to the next n requests;
- ``delay_s``: sleep that long before answering.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Request:
    """One request as the receiver saw it."""

    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    at: float
    status: int
    verified: bool

    def json(self) -> Any:
        """The parsed body."""
        return json.loads(self.body)


@dataclass
class Receiver:
    """An aiohttp server answering POST /hook; start() binds 127.0.0.1 on a free port."""

    secrets: list[str] = field(default_factory=list)
    require_all: bool = False
    fail_ids: dict[str, int] = field(default_factory=dict)
    status: int | None = None
    retry_after: tuple[int, str] | None = None
    delay_s: float = 0.0
    requests: list[Request] = field(default_factory=list)
    accepted: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The URL subscriptions should point at."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        """Bind and serve."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        """Stop serving and close connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _verify(self, headers: dict[str, str], body: bytes) -> bool:
        results = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
                results.append(True)
            except WebhookVerificationError:
                results.append(False)
        return bool(results) and (all(results) if self.require_all else any(results))

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        verified = self._verify(headers, body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, extra = self._decide(webhook_id, verified)
        req = Request(webhook_id, headers.get("webhook-timestamp", ""), headers.get("webhook-signature", ""),
                      body, time.monotonic(), status, verified)
        self.requests.append(req)
        if 200 <= status < 300:
            self.accepted.append(req)
        return web.Response(status=status, headers=extra, text="" if status == 204 else f"status {status}")

    def _decide(self, webhook_id: str, verified: bool) -> tuple[int, dict[str, str]]:
        if not verified:
            return 401, {}
        if self.retry_after is not None and self.retry_after[0] > 0:
            left, value = self.retry_after
            self.retry_after = (left - 1, value)
            return 429, {"Retry-After": value}
        if self.status is not None:
            return self.status, {}
        if self.fail_ids.get(webhook_id, 0) > 0:
            self.fail_ids[webhook_id] -= 1
            return 500, {}
        return 204, {}

    def events(self) -> list[Any]:
        """The accepted bodies, each webhook-id once (first acceptance), parsed, in arrival order."""
        seen: set[str] = set()
        out = []
        for req in self.accepted:
            if req.webhook_id not in seen:
                seen.add(req.webhook_id)
                out.append(req.json())
        return out

    def attempts_by_id(self) -> Counter[str]:
        """How many requests each webhook-id got."""
        return Counter(r.webhook_id for r in self.requests)


async def wait_until(predicate: Any, timeout_s: float = 20.0, interval_s: float = 0.02) -> None:
    """Poll ``predicate()`` until true; fail with AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
