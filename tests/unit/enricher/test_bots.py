"""Bot detection: precision/recall on external corpora, named kinds, and the non-UA signals."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from services.enricher.bots import DATA_DIR, _lowered, load_agents, load_networks
from services.enricher.chain import Enricher, LinkInfo
from tests.unit.enricher.conftest import load_bot_uas, load_browser_rows, raw_click

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
MICROSOFT_IP = "40.107.1.1"  # MICROSOFT-CORP-MSN-AS-BLOCK (AS8075) in geoip2fast's data
AWS_IP = "52.95.110.1"  # AMAZON-02
HOME_IP = "81.2.69.142"  # a UK ISP
T = 1_700_000_000_000


def _is_bot(enricher: Enricher, ua: str) -> bool:
    return bool(enricher.enrich(raw_click(user_agent=ua, client_ip=HOME_IP), None, now_ms=T)["is_bot"])


def _precision_recall(enricher: Enricher, bots_file: str, browsers_file: str) -> tuple[float, float]:
    bots = load_bot_uas(bots_file)
    browsers = [r["ua"] for r in load_browser_rows(browsers_file)]
    tp = sum(_is_bot(enricher, ua) for ua in bots)
    fp = sum(_is_bot(enricher, ua) for ua in browsers)
    return tp / (tp + fp), tp / len(bots)


def test_precision_and_recall_on_the_sample(enricher: Enricher) -> None:
    """On 400 crawler-user-agents bots and 500 real browsers: recall >= 0.95, precision >= 0.99."""
    precision, recall = _precision_recall(
        enricher, "crawler_user_agents_sample.txt", "browser_user_agents_sample.jsonl"
    )
    assert recall >= 0.95
    assert precision >= 0.99


def test_precision_and_recall_on_the_holdout(enricher: Enricher) -> None:
    """On corpora never used to tune the lists: recall >= 0.93, precision >= 0.99."""
    precision, recall = _precision_recall(
        enricher, "crawler_user_agents_holdout.txt", "browser_user_agents_holdout.jsonl"
    )
    assert recall >= 0.93
    assert precision >= 0.99


@pytest.mark.parametrize(
    ("ua", "kind", "name"),
    [
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "link_preview", "Slackbot"),
        (
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "link_preview",
            "facebookexternalhit",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) "
            "Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
            "link_preview",
            "iMessage",
        ),
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.1; +https://openai.com/gptbot)",
            "ai_agent",
            "GPTBot",
        ),
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; "
            "+https://openai.com/bot",
            "ai_agent",
            "ChatGPT-User",
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "search_engine",
            "Googlebot",
        ),
        ("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", "monitor", "UptimeRobot"),
        ("curl/8.5.0", "automation", "curl"),
        ("python-requests/2.32.3", "automation", "python-requests"),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 "
            "Safari/537.36",
            "headless",
            "HeadlessChrome",
        ),
        ("", "automation", ""),
    ],
)
def test_known_bots_get_their_kind_and_name(enricher: Enricher, ua: str, kind: str, name: str) -> None:
    """Curated agents are bots of the listed kind, named, with device_type bot."""
    out = enricher.enrich(raw_click(user_agent=ua), None, now_ms=T)
    assert (out["is_bot"], out["bot_kind"], out["bot_name"], out["device_type"]) == (True, kind, name, "bot")


def test_browser_ua_from_cloud_right_after_link_creation_is_a_security_scanner(enricher: Enricher) -> None:
    """A browser UA from Microsoft's cloud 5 s after the link was created is a security scanner."""
    link = LinkInfo(workspace_id="ws_1", created_ms=T - 5_000)
    out = enricher.enrich(raw_click(client_ip=MICROSOFT_IP, ts_ms=T), link, now_ms=T)
    assert (out["is_bot"], out["bot_kind"]) == (True, "security_scanner")
    assert {"asn_cloud", "fresh_link_from_cloud"} <= set(out["trust_signals"])
    assert out["device_type"] == "desktop"


def test_same_click_an_hour_later_is_only_less_trusted(enricher: Enricher) -> None:
    """The same cloud click an hour after link creation is not a bot, just lower trust."""
    link = LinkInfo(created_ms=T - 3_600_000)
    out = enricher.enrich(raw_click(client_ip=AWS_IP, ts_ms=T), link, now_ms=T)
    assert (out["is_bot"], out["trust_signals"]) == (False, ["asn_cloud"])
    assert out["trust_score"] < 100


def test_browser_from_home_network_is_fully_trusted(enricher: Enricher) -> None:
    """A browser UA from a residential ISP fires nothing."""
    out = enricher.enrich(raw_click(client_ip=HOME_IP), LinkInfo(created_ms=T - 1000), now_ms=T)
    assert (out["is_bot"], out["trust_score"], out["trust_signals"]) == (False, 100, [])


def test_head_request_is_a_bot(enricher: Enricher) -> None:
    """HEAD with a browser UA is automation."""
    out = enricher.enrich(raw_click(method="HEAD"), None, now_ms=T)
    assert (out["is_bot"], out["bot_kind"], out["trust_signals"]) == (True, "automation", ["method_head"])


def test_prefetch_lowers_trust_without_making_a_bot(enricher: Enricher) -> None:
    """Sec-Purpose: prefetch fires a signal but alone stays human."""
    out = enricher.enrich(raw_click(purpose="prefetch;prerender"), None, now_ms=T)
    assert (out["is_bot"], out["trust_signals"]) == (False, ["prefetch"])


def test_velocity_above_threshold_fires(enricher: Enricher) -> None:
    """A velocity above policy.velocity_per_minute fires; at the threshold it does not."""
    limit = enricher.signals.policy.velocity_per_minute
    assert enricher.enrich(raw_click(), None, now_ms=T, velocity=limit)["trust_signals"] == []
    assert enricher.enrich(raw_click(), None, now_ms=T, velocity=limit + 1)["trust_signals"] == ["velocity"]


def test_rewriter_referrer_from_cloud_is_a_scanner(enricher: Enricher) -> None:
    """A Safe Links referrer plus a cloud address is a security scanner named after the rewriter."""
    out = enricher.enrich(
        raw_click(client_ip=AWS_IP, referer="https://eur01.safelinks.protection.outlook.com/?url=x"),
        None,
        now_ms=T,
    )
    assert (out["is_bot"], out["bot_kind"], out["referrer_class"]) == (True, "security_scanner", "email")
    assert out["bot_name"] == "eur01.safelinks.protection.outlook.com"


def test_headless_client_hint_is_a_bot(enricher: Enricher) -> None:
    """A Sec-CH-UA brand list naming HeadlessChrome marks a headless bot despite a normal UA."""
    out = enricher.enrich(raw_click(ch_ua='"HeadlessChrome";v="124", "Chromium";v="124"'), None, now_ms=T)
    assert (out["is_bot"], out["bot_kind"]) == (True, "headless")


def test_data_files_give_every_entry_a_source() -> None:
    """bots.toml and asns.toml: every entry names its source; the loaders accept them."""
    for name, key in (("bots.toml", "agent"), ("asns.toml", "provider")):
        doc = tomllib.loads((DATA_DIR / name).read_text())
        assert doc[key]
        assert all(entry.get("source") for entry in doc[key])
    assert len(load_agents()) > 50
    assert load_networks().find(16509, "").category == "cloud"  # type: ignore[union-attr]


def test_agent_with_unknown_kind_is_rejected(tmp_path: Path) -> None:
    """A bots.toml entry with a kind outside the contract fails at load time."""
    path = tmp_path / "bots.toml"
    path.write_text('[[agent]]\nname = "x"\nkind = "robot"\npattern = "x"\nsource = "s"\n')
    with pytest.raises(ValueError, match="unknown kind"):
        load_agents(path)


def test_lowered_agent_patterns_match_exactly_like_the_case_insensitive_ones() -> None:
    """Every curated agent finds the same user agents, in both corpora, lower-cased or not."""
    agents = load_agents(DATA_DIR / "bots.toml")
    uas = [r["ua"] for r in load_browser_rows("browser_user_agents_sample.jsonl")]
    uas += load_bot_uas("crawler_user_agents_sample.txt") + [a.name for a in agents] + ["SLACKBOT 1.0", "wHaTsApp/2"]
    lowered = [(agent, agent.lowered) for agent in agents]
    assert sum(fast is not None for _, fast in lowered) > len(agents) * 0.9
    hits = 0
    for ua in uas:
        for agent, fast in lowered:
            if fast is not None:
                assert bool(fast.search(ua.lower())) == bool(agent.pattern.search(ua)), (agent.name, ua)
                hits += bool(agent.pattern.search(ua))
    assert hits > 50


def test_patterns_whose_meaning_changes_with_case_are_not_lowered() -> None:
    """Character classes and upper-case escapes keep the case-insensitive pattern."""
    assert _lowered(r"Foo\Sbar") is None
    assert _lowered("[A-Z]bot") is None
    assert _lowered("Straße") is None
    assert _lowered(r"Foo\.bar|(?!.*Safari)") is not None
