"""Every cookbook query in docs/analytics.md runs on generated clicks and gives the answer computed in Python."""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from clickwire.links import Link
from clickwire.settings import REPO_ROOT

from .helpers import enriched_click

pytestmark = [pytest.mark.clickhouse]

DOC = REPO_ROOT / "docs" / "analytics.md"
_QUERY = re.compile(r"^### (?P<title>.+?) \{#(?P<id>[a-z0-9-]+)\}\s*$(?P<body>.*?)(?=^#{1,3} |\Z)", re.M | re.S)
_SQL = re.compile(r"```sql\n(.*?)```", re.S)
BASE_MS = 1_741_564_800_000  # 2025-03-10 00:00 UTC
CAMPAIGN = "spring"


def cookbook() -> dict[str, str]:
    """id -> SQL of every cookbook query in docs/analytics.md."""
    queries: dict[str, str] = {}
    for match in _QUERY.finditer(DOC.read_text()):
        blocks = _SQL.findall(match.group("body"))
        assert len(blocks) == 1, f"{match.group('id')}: expected one ```sql block, found {len(blocks)}"
        assert match.group("id") not in queries, f"duplicate id {match.group('id')}"
        queries[match.group("id")] = blocks[0]
    return queries


def generate(ws: str, n: int = 900, seed: int = 11) -> tuple[list[Link], list[dict[str, Any]]]:
    """Links and clicks with a mix that gives every cookbook question a non-trivial answer."""
    rng = random.Random(seed)
    campaigns = ["spring", "spring", "autumn", None]
    links = [Link(id=f"{ws}-L{i}", workspace_id=ws, domain="clk.test", code=f"{ws}{i}",
                  destination="https://example.com/", created_ms=BASE_MS + i * 3_600_000 + 1234,
                  updated_ms=BASE_MS + i * 3_600_000 + 1234, campaign=campaigns[i]) for i in range(4)]
    ips = [f"198.51.100.{i}" for i in range(12)] + ["203.0.113.7", "203.0.113.8"]
    clicks = []
    for i in range(n):
        link = rng.choice(links)
        early = rng.random() < 0.1
        ts = link.created_ms + (rng.randrange(0, 10_000) if early else rng.randrange(10_000, 3 * 86_400_000))
        bot = rng.random() < 0.25 or (early and rng.random() < 0.6)
        ip = rng.choice(ips[-2:]) if bot and rng.random() < 0.5 else rng.choice(ips)
        clicks.append(enriched_click(
            ws, i, ts_ms=ts, link_id=link.id, code=link.code, campaign=link.campaign, link_created_ms=link.created_ms,
            is_bot=bot,
            bot_kind=rng.choice(["link_preview", "crawler", "security_scanner", "ai_agent"]) if bot else "none",
            trust_score=rng.randrange(0, 60) if bot else rng.randrange(60, 101), ip=ip,
            country=rng.choice(["DE", "US", "FR", "BR", ""]),
            referrer_class=rng.choice(["search", "social", "email", "direct", "other"]),
            device_type="bot" if bot else rng.choice(["desktop", "mobile", "mobile", "tablet"]),
            visitor_hash=f"v{rng.randrange(300)}", qr=rng.random() < 0.1, enriched_ms=ts + 5))
    return links, clicks


def _minute(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 60_000 * 60, UTC)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _sorted_counts(counter: Counter[Any], key: str) -> list[dict[str, Any]]:
    return [{key: k, "clicks": v} for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]


def expected_answers(links: list[Link], clicks: list[dict[str, Any]]) -> dict[str, Callable[[], list[dict]]]:
    """The answer to each cookbook question, computed from the generated data."""
    humans = [c for c in clicks if not c["is_bot"]]
    bots = [c for c in clicks if c["is_bot"]]
    link_ids = sorted({c["link_id"] for c in clicks})

    def per_link(fn: Callable[[list[dict]], dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"link_id": lid, **fn([c for c in clicks if c["link_id"] == lid])} for lid in link_ids]

    def per_day() -> list[dict]:
        counts = Counter((c["link_id"], _day(c["ts_ms"])) for c in humans)
        return [{"link_id": k[0], "day": k[1], "clicks": v} for k, v in sorted(counts.items())]

    def first_human() -> list[dict]:
        created = {link.id: link.created_ms for link in links}
        first: dict[str, int] = {}
        for c in humans:
            first[c["link_id"]] = min(first.get(c["link_id"], c["ts_ms"]), c["ts_ms"])
        return [{"link_id": lid, "ms_to_first_human_click": first[lid] - created[lid]} for lid in sorted(first)]

    def suspicious() -> list[dict]:
        by_ip: dict[str, list[dict]] = defaultdict(list)
        for c in clicks:
            by_ip[c["ip"]].append(c)
        rows = []
        for ip, cs in by_ip.items():
            low = sum(c["trust_score"] < 50 for c in cs)
            if len(cs) >= 5 and low * 2 > len(cs):
                rows.append({"ip": ip, "clicks": len(cs), "links": len({c["link_id"] for c in cs}),
                             "low_trust_clicks": low})
        return sorted(rows, key=lambda r: (-r["clicks"], r["ip"]))

    def early() -> list[dict]:
        return [row for row in per_link(lambda cs: {
            "clicks": sum(c["ts_ms"] - c["link_created_ms"] < 10_000 for c in cs),
            "bots": sum(c["ts_ms"] - c["link_created_ms"] < 10_000 and c["is_bot"] for c in cs)}) if row["clicks"]]

    def hourly() -> list[dict]:
        in_campaign = [c for c in clicks if c["campaign"] == CAMPAIGN]
        hours = sorted({c["ts_ms"] // 3_600_000 for c in in_campaign})
        return [{"hour": datetime.fromtimestamp(h * 3600, UTC),
                 "clicks": sum(c["ts_ms"] // 3_600_000 == h for c in in_campaign),
                 "human_clicks": sum(c["ts_ms"] // 3_600_000 == h and not c["is_bot"] for c in in_campaign)}
                for h in hours]

    def per_minute() -> list[dict]:
        counts = Counter((_minute(c["ts_ms"]), c["country"]) for c in humans)
        return [{"minute": k[0], "country": k[1], "clicks": v} for k, v in sorted(counts.items())]

    return {
        "clicks-per-link-per-day": per_day,
        "unique-visitors": lambda: [{"link_id": lid, "visitors": len({c["visitor_hash"] for c in humans
                                                                      if c["link_id"] == lid})} for lid in link_ids],
        "top-countries-for-campaign": lambda: _sorted_counts(
            Counter(c["country"] for c in humans if c["campaign"] == CAMPAIGN), "country")[:10],
        "bot-share-by-kind": lambda: [{**row, "pct_of_all_clicks": pytest.approx(100 * row["clicks"] / len(clicks),
                                                                                abs=0.006)}
                                      for row in _sorted_counts(Counter(c["bot_kind"] for c in bots), "bot_kind")],
        "time-to-first-human-click": first_human,
        "link-preview-vs-human": lambda: per_link(lambda cs: {
            "previews": sum(c["bot_kind"] == "link_preview" for c in cs), "humans": sum(not c["is_bot"] for c in cs)}),
        "referrer-classes": lambda: _sorted_counts(Counter(c["referrer_class"] for c in humans), "referrer_class"),
        "trust-score-distribution": lambda: [{"bucket": b, "clicks": n} for b, n in sorted(
            Counter(c["trust_score"] // 10 * 10 for c in clicks).items())],
        "suspicious-ips": suspicious,
        "clicks-within-10s-of-creation": early,
        "hourly-campaign-trend": hourly,
        "device-split": lambda: _sorted_counts(Counter(c["device_type"] for c in humans), "device_type"),
        "clicks-per-minute-by-country": per_minute,
        "qr-clicks": lambda: per_link(lambda cs: {"qr_clicks": sum(c["qr"] for c in cs), "clicks": len(cs)}),
    }


@pytest.fixture(scope="module")
def workspace() -> str:
    return f"ws_{uuid.uuid4().hex[:10]}"


async def test_cookbook_has_at_least_twelve_queries_each_with_an_expected_answer() -> None:
    """docs/analytics.md holds at least 12 identified queries and this test knows the answer to each."""
    ids = set(cookbook())
    assert len(ids) >= 12
    assert ids == set(expected_answers([], []))


@pytest.mark.parametrize("query_id", sorted(cookbook()))
async def test_cookbook_query_answers_correctly(query_id: str, clickhouse, workspace) -> None:
    """The cookbook query gives exactly the answer computed in Python from the generated clicks."""
    links, clicks = generate(workspace)
    loaded = await clickhouse.query("SELECT count() AS n FROM clickwire.clicks WHERE workspace_id = {ws:String}",
                                    {"ws": workspace})
    if loaded[0]["n"] == 0:
        await clickhouse.insert("clickwire.links", [{**link.to_avro(), "rules": "[]", "deleted": 0} for link in links])
        # Inserted twice on purpose: duplicates must not change any cookbook answer.
        await clickhouse.insert("clickwire.clicks", clicks)
        await clickhouse.insert("clickwire.clicks", clicks[:50])
    expected = expected_answers(links, clicks)[query_id]()
    assert expected, f"{query_id}: the generated data gives an empty answer, which proves nothing"
    rows = await clickhouse.query_readonly(cookbook()[query_id], {"workspace": workspace, "campaign": CAMPAIGN})
    assert rows == expected
