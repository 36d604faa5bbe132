"""``clickwire receiver``: a webhook endpoint for demos and checks, the way a careful customer writes one.

Every request is verified with the independent ``standardwebhooks`` library (any of the given
secrets may match), de-duplicated by ``webhook-id``, and checked for order: within one
subscription clicks of the same link must arrive in the order they happened (each element of a
batch is de-duplicated by its own ``id``, as docs/webhooks.md asks of receivers). It keeps counters
and click-to-receipt latencies, and answers 204 (401 on a bad signature).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

OnEvent = Callable[[dict[str, Any], float], None]


@dataclass
class ReceiverStats:
    """What the receiver has seen so far."""

    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    bad_signatures: int = 0
    out_of_order: int = 0
    # The first few order violations, for diagnosis: (subscription, link, click id, ts_ms, newest ts_ms seen).
    disorders: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)
    click_ids: set[str] = field(default_factory=set)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20000))
    accepted_at: deque[float] = field(default_factory=lambda: deque(maxlen=50000))

    def rate(self, window_s: float = 5.0) -> float:
        """Events accepted per second over the last window."""
        now = time.monotonic()
        return sum(1 for t in self.accepted_at if now - t <= window_s) / window_s

    def percentile(self, q: float) -> float | None:
        """Latency percentile (0-100) of click -> receipt in ms, None before any click."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


class Receiver:
    """Verifies, de-duplicates and order-checks webhook deliveries."""

    def __init__(self, secrets: Iterable[str], *, on_event: OnEvent | None = None, dedupe_window: int = 1_000_000,
                 status: int = 204) -> None:
        self._hooks = [Webhook(s) for s in secrets]
        self.stats = ReceiverStats()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._window = dedupe_window
        self._last_ts: dict[tuple[str, str], int] = {}
        self._on_event = on_event
        self.status = status
        self.events: list[dict[str, Any]] = []
        self.keep_events = False

    def add_secret(self, secret: str) -> None:
        """Accept signatures made with another secret (e.g. after a rotation)."""
        self._hooks.append(Webhook(secret))

    def _verify(self, body: bytes, headers: dict[str, str]) -> bool:
        for hook in self._hooks:
            try:
                hook.verify(body, headers, json_parse=False)
                return True
            except WebhookVerificationError:
                continue
        return False

    async def handle(self, request: web.Request) -> web.Response:
        """The webhook endpoint."""
        body = await request.read()
        self.stats.requests += 1
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not self._verify(body, headers):
            self.stats.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        if self.status >= 300:
            return web.Response(status=self.status)
        # The same event goes to every subscription it matches with the same webhook-id, so a
        # duplicate is a repeat within one subscription (one endpoint path here).
        subscription = request.match_info.get("subscription", "")
        if not self._first_time(subscription, headers["webhook-id"]):
            self.stats.duplicates += 1
            return web.Response(status=204)
        payload = orjson.loads(body)
        if not isinstance(payload, list):
            self._accept(subscription, payload)  # webhook-id is the event id
            return web.Response(status=204)
        # A batch (docs/webhooks.md#batches): its webhook-id names this grouping only, and an event
        # delivered again (at-least-once upstream, a replay) may come in another batch, so each
        # element is de-duplicated on its own id.
        for event in payload:
            if self._first_time(subscription, str(event.get("id"))):
                self._accept(subscription, event)
            else:
                self.stats.duplicates += 1
        return web.Response(status=204)

    def _first_time(self, subscription: str, webhook_id: str) -> bool:
        """Remember (subscription, id); False when it was seen before (within the dedupe window)."""
        key = (subscription, webhook_id)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)
        return True

    def _accept(self, subscription: str, event: dict[str, Any]) -> None:
        now = time.time()
        self.stats.accepted += 1
        self.stats.accepted_at.append(time.monotonic())
        kind = str(event.get("type", "?"))
        self.stats.by_type[kind] = self.stats.by_type.get(kind, 0) + 1
        latency = None
        click = (event.get("data") or {}).get("click")
        if isinstance(click, dict) and isinstance(click.get("click_id"), str):
            self.stats.click_ids.add(click["click_id"])
        if isinstance(click, dict) and isinstance(click.get("ts_ms"), int):
            latency = now * 1000 - click["ts_ms"]
            self.stats.latencies_ms.append(latency)
            key = (subscription, str(click.get("link_id", "")))
            if click["ts_ms"] < self._last_ts.get(key, 0):
                self.stats.out_of_order += 1
                if len(self.stats.disorders) < 50:
                    self.stats.disorders.append((key[0], key[1], str(click.get("click_id")), click["ts_ms"],
                                                 self._last_ts[key]))
            self._last_ts[key] = max(click["ts_ms"], self._last_ts.get(key, 0))
        if self.keep_events:
            self.events.append(event)
        if self._on_event is not None:
            self._on_event(event, latency or 0.0)

    def app(self) -> web.Application:
        """An aiohttp application serving POST / and POST /{subscription}."""
        application = web.Application(client_max_size=8 * 2**20)
        application.router.add_post("/", self.handle)
        application.router.add_post("/{subscription}", self.handle)
        application.router.add_get("/stats", self._stats)
        return application

    async def _stats(self, _: web.Request) -> web.Response:
        s = self.stats
        return web.json_response({
            "requests": s.requests, "accepted": s.accepted, "duplicates": s.duplicates,
            "bad_signatures": s.bad_signatures, "out_of_order": s.out_of_order, "by_type": s.by_type,
            "latency_p50_ms": s.percentile(50), "latency_p99_ms": s.percentile(99),
        })


async def serve(receiver: Receiver, host: str, port: int) -> web.AppRunner:
    """Start serving the receiver; the caller cleans up the returned runner."""
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
