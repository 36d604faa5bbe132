"""The live dashboard end to end: real API, real broker, headless Chromium reading the page.

Clicks and webhook attempts are produced straight to clicks.enriched and webhooks.attempts (what
the enricher and the deliverer write); the page must show exactly what was sent for its workspace
and nothing of another's. ``CLICKWIRE_UPDATE_SCREENSHOT=1`` writes the screenshot to
docs/dashboard.png (otherwise into the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from clickwire.codec import codec_for
from clickwire.settings import REPO_ROOT, CommonSettings
from clickwire.topics import Topic, name
from services.api.app import ApiServer
from services.api.context import ApiContext
from services.api.keys import new_key, publish_key
from services.api.settings import ApiSettings
from tests.support.chromium import available, chromium_page

pytestmark = [pytest.mark.kafka]


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    """`make setup` installs Debian's chromium; its absence is a broken set-up, not a reason to skip."""
    assert available(), "Debian's chromium is missing: run `make setup` (apt-get install -y chromium)"

WORKSPACE, OTHER = "ws_acme", "ws_other"
# (domain/code, campaign): two campaigns plus links in none, so every chart has several series.
LINKS = [("go.acme.dev/spring", "spring-sale"), ("go.acme.dev/spring-ig", "spring-sale"),
         ("go.acme.dev/launch", "product-launch"), ("go.acme.dev/pricing", "product-launch"),
         ("go.acme.dev/docs", None)]
COUNTRIES = {"US": 30, "DE": 15, "GB": 12, "FR": 10, "BR": 8, "IN": 8, "JP": 6, "CA": 5}
BOTS = [("link_preview", "Slackbot", 10, ["ua_bot"]), ("security_scanner", "Microsoft Safe Links", 25,
        ["cloud_asn", "fast_after_create"]), ("crawler", "AhrefsBot", 0, ["ua_bot"]),
        ("search_engine", "Googlebot", 5, ["ua_bot", "verified_crawler"])]
HUMANS = [("mobile", "Mobile Safari", "iOS"), ("desktop", "Chrome", "Windows"), ("desktop", "Firefox", "Linux"),
          ("mobile", "Chrome Mobile", "Android"), ("desktop", "Safari", "Mac OS X")]
REFERRERS = ["", "www.google.com", "t.co", "www.linkedin.com", "news.ycombinator.com", "mail.google.com"]


@dataclass
class Dashboard:
    """A running API with a producer on the test's topics."""

    ctx: ApiContext
    url: str
    common: CommonSettings

    async def token(self, workspace: str) -> str:
        """Mint a key and wait until the API accepts it."""
        key, token = new_key(workspace, "dashboard test")
        await publish_key(self.common, self.ctx.producer, key)
        await poll(lambda: self.ctx.keys.get(key.id) is not None, "key visible to the API")
        return token

    async def produce(self, topic: Topic, records: list[tuple[str, dict[str, Any]]]) -> None:
        """Encode and write (key, record) pairs, waiting until the broker has all of them."""
        codec = codec_for(topic, self.common.schema_registry_url)
        physical = name(topic, self.common.topic_prefix)
        sent = [await self.ctx.producer.send(physical, codec.encode(r), key=k.encode()) for k, r in records]
        await asyncio.gather(*sent)


async def poll(check: Any, what: str, timeout_s: float = 15.0) -> Any:
    """Poll a (sync or async) check until truthy; fail naming what after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="session")
async def dashboard(topics: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Dashboard]:
    """The API on a free port with the test's own topics; webhook URLs on 127.0.0.1 allowed."""
    monkeypatch.setenv("CLICKWIRE_WEBHOOK_ALLOW_NETS", "127.0.0.1/32")
    ctx = ApiContext(replace(ApiSettings.from_env({}), common=topics))
    await ctx.start()
    server = ApiServer(ctx, "127.0.0.1", 0)
    try:
        await server.start()
        yield Dashboard(ctx, f"http://127.0.0.1:{server.port}", topics)
    finally:
        await server.stop()
        await ctx.stop()


def click(rng: random.Random, workspace: str, ts_ms: int) -> dict[str, Any]:
    """A plausible enriched click: a human most of the time, else one of a few bot kinds."""
    link, campaign = rng.choice(LINKS)
    domain, code = link.split("/")
    country = rng.choices(list(COUNTRIES), weights=list(COUNTRIES.values()))[0]
    record: dict[str, Any] = {
        "click_id": str(uuid.uuid4()), "ts_ms": ts_ms, "link_id": f"lnk_{code}", "workspace_id": workspace,
        "domain": domain, "code": code, "method": "GET", "user_agent": "Mozilla/5.0", "status": 302,
        "redirector_id": "r1", "ip": "203.0.113.0", "campaign": campaign, "country": country,
        "utm_campaign": campaign, "enriched_ms": ts_ms + 3,
    }
    if rng.random() < 0.22:
        kind, bot_name, trust, signals = rng.choice(BOTS)
        record.update(is_bot=True, bot_kind=kind, bot_name=bot_name, trust_score=trust, trust_signals=signals,
                      device_type="bot", browser=bot_name)
    else:
        device, browser, os_name = rng.choice(HUMANS)
        referrer = rng.choice(REFERRERS)
        trust = rng.choice([100, 100, 100, 95, 90, 70])
        record.update(device_type=device, browser=browser, os=os_name, referrer_host=referrer,
                      referrer_class="search" if "google" in referrer else "social" if referrer else "direct",
                      trust_score=trust, trust_signals=[] if trust == 100 else ["datacenter_ip"])
    return record


def attempt(subscription: str, ts_ms: int, status: int, latency_ms: float, outcome: str) -> dict[str, Any]:
    """One webhooks.attempts record."""
    return {"event_id": str(uuid.uuid4()), "subscription_id": subscription, "attempt": 1, "ts_ms": ts_ms,
            "status": status, "latency_ms": latency_ms, "outcome": outcome,
            "error_class": None if outcome == "success" else "http_status"}


async def subscribe(client: httpx.AsyncClient, description: str, path: str) -> str:
    """Create a webhook subscription through the API; its id."""
    response = await client.post("/v1/webhooks", json={"url": f"http://127.0.0.1:9/{path}",
                                                       "description": description})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


DOM_VALUES = """(() => {
  const out = {};
  for (const e of document.querySelectorAll('[data-testid]')) out[e.dataset.testid] = e.textContent.trim();
  out['chart-links'] = document.getElementById('chart-links').dataset.total;
  out['chart-campaigns'] = document.getElementById('chart-campaigns').dataset.total;
  out.rows = [...document.querySelectorAll('[data-testid=latest-row]')].map(r => ({
    id: r.dataset.clickId, bot: !!r.querySelector('[data-testid=badge-bot]'),
    trust: r.querySelector('[data-testid=badge-trust]').textContent}));
  out.webhook_rows = document.querySelectorAll('[data-testid=webhook-row]').length;
  out.search = location.search;
  out.login_hidden = document.getElementById('login').offsetParent === null;
  return out;
})()"""


async def test_dashboard_shows_the_clicks_and_deliveries_sent(dashboard: Dashboard, tmp_path: Path) -> None:
    """Charts, totals, latest clicks and webhook health show exactly what was produced for the workspace."""
    rng = random.Random(6)
    token, other_token = await dashboard.token(WORKSPACE), await dashboard.token(OTHER)
    async with httpx.AsyncClient(base_url=dashboard.url, headers={"Authorization": f"Bearer {token}"}) as api, \
            httpx.AsyncClient(base_url=dashboard.url, headers={"Authorization": f"Bearer {other_token}"}) as other:
        crm = await subscribe(api, "CRM sync", "crm")
        slack = await subscribe(api, "Slack #growth alerts", "slack")
        foreign = await subscribe(other, "someone else's", "x")

        # Earlier traffic (the snapshot on connect), growing towards now so the chart has a shape.
        now = int(time.time() * 1000)
        before = [click(rng, WORKSPACE, now - int(330_000 * (1 - rng.random() ** 0.6)) - 10_000) for _ in range(170)]
        foreign_clicks = [click(rng, OTHER, now - rng.randrange(60_000)) for _ in range(25)]
        await dashboard.produce(Topic.CLICKS_ENRICHED, [(c["link_id"], c) for c in before + foreign_clicks])
        crm_attempts = [attempt(crm, now - 300_000 + i * 7_000, 200, 8 + rng.random() * 30, "success")
                        for i in range(40)]
        crm_attempts[12] = attempt(crm, crm_attempts[12]["ts_ms"], 503, 41.0, "retry")
        slack_attempts = [attempt(slack, now - 200_000 + i * 9_000, 200, 60 + rng.random() * 90, "success")
                          for i in range(15)]
        slack_attempts += [attempt(slack, now - 40_000 + i * 5_000, 500, 95.5 + i, "retry") for i in range(4)]
        await dashboard.produce(Topic.WEBHOOK_ATTEMPTS, [(a["subscription_id"], a) for a in crm_attempts
                                                         + slack_attempts + [attempt(foreign, now, 200, 5, "success")]])

        async def snapshot_has_all() -> bool:
            body = (await api.get("/v1/dashboard/snapshot")).json()
            return bool(body["totals"]["clicks"] == len(before))

        await poll(snapshot_has_all, "the API's snapshot to hold the earlier clicks")

        async with chromium_page(tmp_path / "chromium") as page:
            await page.goto(f"{dashboard.url}/dashboard?token={token}")
            await page.wait_for("document.querySelector('[data-testid=status]').dataset.state === 'live'",
                                "the event stream to be live")
            await page.wait_for(f"document.querySelector('[data-testid=total-clicks]').textContent === "
                                f"'{len(before)}'", "the snapshot's total on the page")

            # Live traffic while the page is open: it must arrive through the event stream.
            live = [click(rng, WORKSPACE, int(time.time() * 1000) - rng.randrange(3000)) for _ in range(60)]
            await dashboard.produce(Topic.CLICKS_ENRICHED, [(c["link_id"], c) for c in live])
            last_slack = attempt(slack, int(time.time() * 1000), 500, 120.0, "dead")
            await dashboard.produce(Topic.WEBHOOK_ATTEMPTS, [(slack, last_slack)])
            sent = before + live
            await page.wait_for(f"document.querySelector('[data-testid=total-clicks]').textContent === "
                                f"'{len(sent)}' && document.getElementById('chart-links').dataset.total === "
                                f"'{len(sent)}'", "the live clicks on the page")
            await page.wait_for(f"document.querySelector('[data-testid=\"wh-failed-{slack}\"]')?.textContent "
                                "=== '5'", "the last webhook attempt on the page")
            dom = await page.evaluate(DOM_VALUES)
            target = REPO_ROOT / "docs" / "dashboard.png" if os.environ.get("CLICKWIRE_UPDATE_SCREENSHOT") == "1" \
                else tmp_path / "dashboard.png"
            await page.screenshot(target)
            assert page.errors == []

    bots = [c for c in sent if c.get("is_bot")]
    assert dom["workspace"] == WORKSPACE
    assert dom["search"] == "", "the token must leave the address bar"
    assert dom["login_hidden"], "the key form is gone once the key is accepted"
    assert (dom["total-clicks"], dom["total-humans"], dom["total-bots"]) == \
        (str(len(sent)), str(len(sent) - len(bots)), str(len(bots)))
    assert dom["chart-links"] == dom["chart-campaigns"] == str(len(sent))
    for kind, n in Counter(c["bot_kind"] for c in bots).items():
        assert dom[f"kind-{kind}"] == str(n), kind
    for country, n in Counter(c["country"] for c in sent).items():
        assert dom[f"country-{country}"] == str(n), country
    for link, n in Counter(f"{c['domain']}/{c['code']}" for c in sent).items():
        assert dom[f"links-total-{link}"] == str(n), link
    for campaign, n in Counter(c["campaign"] or "(none)" for c in sent).items():
        assert dom[f"campaigns-total-{campaign}"] == str(n), campaign

    by_id = {c["click_id"]: c for c in sent}
    live_ids = {c["click_id"] for c in live}
    assert len(dom["rows"]) == 50
    assert {row["id"] for row in dom["rows"]} <= live_ids, "the latest rows are the newest clicks"
    assert [row["bot"] for row in dom["rows"]] == [bool(by_id[row["id"]].get("is_bot")) for row in dom["rows"]]
    assert [row["trust"] for row in dom["rows"]] == [str(by_id[row["id"]]["trust_score"]) for row in dom["rows"]]

    assert dom["webhook_rows"] == 2, "only this workspace's subscriptions"
    assert (dom[f"wh-ok-{crm}"], dom[f"wh-failed-{crm}"], dom[f"wh-latency-{crm}"]) == \
        ("39", "1", f"{round(crm_attempts[-1]['latency_ms'], 1):.1f} ms")
    assert dom[f"wh-status-{crm}"] == "200 success"
    assert (dom[f"wh-ok-{slack}"], dom[f"wh-failed-{slack}"], dom[f"wh-latency-{slack}"]) == ("15", "5", "120.0 ms")
    assert dom[f"wh-status-{slack}"] == "500 dead"
    assert f"wh-ok-{foreign}" not in dom


async def test_stream_needs_a_key_sends_deltas_at_most_twice_a_second_and_forgets_gone_viewers(
        dashboard: Dashboard) -> None:
    """The stream refuses bad keys, sends throttled deltas that add up to every click, and forgets a closed viewer."""
    token = await dashboard.token(WORKSPACE)
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=10) as client:
        assert (await client.get("/v1/dashboard/stream")).status_code == 401
        assert (await client.get("/v1/dashboard/stream", params={"token": token + "x"})).status_code == 401
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert 'id="chart-links"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]

        async def viewers() -> float:
            metrics = (await client.get("/metrics")).text
            line = next(x for x in metrics.splitlines() if x.startswith("clickwire_dashboard_viewers "))
            return float(line.split()[1])

        rng = random.Random(2)
        updates: list[dict[str, Any]] = []
        async with client.stream("GET", "/v1/dashboard/stream", params={"token": token}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert await viewers() == 1
            lines = stream.aiter_lines()
            kind = ""
            async for line in lines:
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind == "snapshot":
                    assert orjson.loads(line.removeprefix("data: "))["workspace"] == WORKSPACE
                    break
            # One click every 50 ms for 2 s: forty changes that must go out as a handful of updates.
            sent = []
            started = time.monotonic()
            for _ in range(40):
                c = click(rng, WORKSPACE, int(time.time() * 1000))
                sent.append(c["click_id"])
                await dashboard.produce(Topic.CLICKS_ENRICHED, [(c["link_id"], c)])
                await asyncio.sleep(0.05)  # pacing the traffic, not waiting for a result

            async def read_until_all_seen() -> None:
                seen: list[str] = []
                async for line in lines:
                    if line.startswith("data: "):
                        update = orjson.loads(line.removeprefix("data: "))
                        updates.append(update)
                        seen.extend(row["id"] for row in update["latest"])
                        if len(seen) >= len(sent):
                            assert sorted(seen) == sorted(sent), "each click exactly once across the deltas"
                            return

            await asyncio.wait_for(read_until_all_seen(), 15)
            elapsed = time.monotonic() - started
            assert updates[-1]["totals"]["clicks"] == len(sent)
            assert len(updates) <= elapsed / 0.5 + 1, f"{len(updates)} updates in {elapsed:.1f} s"

        async def no_viewers() -> bool:
            return await viewers() == 0

        await poll(no_viewers, "the closed stream to stop counting as a viewer")
