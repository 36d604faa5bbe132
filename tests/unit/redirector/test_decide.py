"""The redirect decision: every branch of decide() and the pages it serves."""

from __future__ import annotations

import pytest

from clickwire.links import RoutingRule, RuleCondition
from services.redirector.decide import (
    Decision,
    RequestFacts,
    country_from_header,
    decide,
    device_type,
    is_preview_bot,
    os_name,
)
from services.redirector.table import HotLink

NOW = 1_760_000_000_000
CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36"
)
SLACK = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
HUMAN = RequestFacts(user_agent=CHROME_WIN)

LINK = HotLink(
    link_id="L1",
    workspace_id="W1",
    domain="clw.io",
    code="abc",
    destination="https://shop.example.com/sale?utm_source=x",
)


def headers(decision: Decision) -> dict[str, str]:
    return dict(decision.headers)


def test_unknown_code_is_404_page_not_cached() -> None:
    """No link: 404 with the not-found page, never cached (the code may be created later)."""
    d = decide(None, HUMAN, NOW, {})
    assert (d.status, d.location, d.outcome) == (404, None, "not_found")
    assert d.body is not None
    assert b"Link not found" in d.body
    assert headers(d)["cache-control"] == "no-store"
    assert headers(d)["content-type"].startswith("text/html")


@pytest.mark.parametrize("status", [302, 307])
def test_temporary_redirects_are_not_stored(status: int) -> None:
    """302/307 redirect to the destination with Cache-Control: no-store so every click reaches us."""
    d = decide(LINK._replace(redirect_type=status), HUMAN, NOW, {})
    assert (d.status, d.location, d.body, d.outcome) == (status, LINK.destination, None, "redirect")
    assert headers(d) == {"location": LINK.destination, "cache-control": "no-store"}


@pytest.mark.parametrize("status", [301, 308])
def test_permanent_redirects_are_cached_privately_for_90s(status: int) -> None:
    """301/308 may be cached by the browser only, for 90 s, never forever."""
    d = decide(LINK._replace(redirect_type=status), HUMAN, NOW, {})
    assert d.status == status
    assert headers(d)["cache-control"] == "private, max-age=90"


def test_permanent_redirect_cache_never_outlives_expiry() -> None:
    """A permanent redirect expiring in 30 s is cached at most 30 s."""
    d = decide(LINK._replace(redirect_type=301, expires_ms=NOW + 30_500), HUMAN, NOW, {})
    assert headers(d)["cache-control"] == "private, max-age=30"


def test_permanent_redirect_with_cap_is_not_stored() -> None:
    """A capped link's answer can change with the next click, so even 301 is not stored."""
    d = decide(LINK._replace(redirect_type=301, max_clicks=5), HUMAN, NOW, {"L1": 1})
    assert (d.status, headers(d)["cache-control"]) == (301, "no-store")


def test_blocked_link_gets_451_warning_without_the_destination() -> None:
    """A blocked link answers 451 with a warning page that does not carry the destination."""
    d = decide(LINK._replace(blocked=True), HUMAN, NOW, {})
    assert (d.status, d.location, d.outcome) == (451, None, "blocked")
    assert d.body is not None
    assert b"unsafe" in d.body
    assert b"shop.example.com" not in d.body


def test_expired_link_goes_to_expired_url() -> None:
    """Once expired, a link with expired_url redirects there (302, not stored)."""
    d = decide(LINK._replace(expires_ms=NOW, expired_url="https://shop.example.com/over"), HUMAN, NOW, {})
    assert (d.status, d.location, d.outcome) == (302, "https://shop.example.com/over", "expired")
    assert headers(d)["cache-control"] == "no-store"


def test_expired_link_without_expired_url_is_410() -> None:
    """Once expired, a link without expired_url answers 410 Gone."""
    assert decide(LINK._replace(expires_ms=NOW - 1), HUMAN, NOW, {}).status == 410


def test_link_before_expiry_still_redirects() -> None:
    """One millisecond before expiry the link still redirects."""
    assert decide(LINK._replace(expires_ms=NOW + 1), HUMAN, NOW, {}).status == 302


def test_cap_reached_is_410_and_below_cap_redirects() -> None:
    """Human clicks at the cap answer 410; one below it still redirects."""
    capped = LINK._replace(max_clicks=3)
    assert decide(capped, HUMAN, NOW, {"L1": 3}).outcome == "cap_reached"
    assert decide(capped, HUMAN, NOW, {"L1": 3}).status == 410
    assert decide(capped, HUMAN, NOW, {"L1": 2}).status == 302
    assert decide(capped, HUMAN, NOW, {}).status == 302


def test_preview_bot_gets_og_page_and_no_redirect() -> None:
    """With bot_policy preview, a link-preview bot gets 200 with escaped og: tags and no Location."""
    link = LINK._replace(
        bot_policy="preview",
        preview_title='Sale <script>"x"</script>',
        preview_description="30% off & more",
        preview_image="https://shop.example.com/og.png",
    )
    d = decide(link, RequestFacts(user_agent=SLACK), NOW, {})
    assert (d.status, d.location, d.outcome) == (200, None, "bot_preview")
    assert d.body is not None
    assert b'property="og:title" content="Sale &lt;script&gt;&quot;x&quot;&lt;/script&gt;"' in d.body
    assert b'content="30% off &amp; more"' in d.body
    assert b'property="og:image" content="https://shop.example.com/og.png"' in d.body
    assert b'property="og:url" content="https://clw.io/abc"' in d.body
    assert b"<script>" not in d.body


def test_preview_page_drops_non_http_images() -> None:
    """A javascript: preview image is not echoed into the page."""
    link = LINK._replace(bot_policy="preview", preview_image="javascript:alert(1)")
    d = decide(link, RequestFacts(user_agent=SLACK), NOW, {})
    assert d.body is not None
    assert b"javascript" not in d.body


def test_refuse_policy_answers_403_to_preview_bots_only() -> None:
    """With bot_policy refuse, preview bots get 403 while browsers are redirected."""
    link = LINK._replace(bot_policy="refuse")
    assert decide(link, RequestFacts(user_agent=SLACK), NOW, {}).status == 403
    assert decide(link, HUMAN, NOW, {}).status == 302


def test_redirect_policy_redirects_bots_and_bots_do_not_bypass_caps() -> None:
    """With bot_policy redirect, bots are redirected like people; an exhausted cap still answers 410."""
    bot = RequestFacts(user_agent=SLACK)
    assert decide(LINK, bot, NOW, {}).status == 302
    assert decide(LINK._replace(max_clicks=1), bot, NOW, {"L1": 1}).status == 410


def test_preview_policy_beats_exhausted_cap_for_bots() -> None:
    """A preview bot on an exhausted link still gets the preview (bots never count against caps)."""
    link = LINK._replace(bot_policy="preview", max_clicks=1)
    assert decide(link, RequestFacts(user_agent=SLACK), NOW, {"L1": 1}).status == 200


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", True),
        ("Twitterbot/1.0", True),
        ("LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)", True),
        ("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", True),
        ("WhatsApp/2.23.20.0", True),
        ("TelegramBot (like TwitterBot)", True),
        (CHROME_WIN, False),
        (SAFARI_IPHONE, False),
        ("", False),
    ],
)
def test_preview_bot_check(ua: str, expected: object) -> None:
    """Known link-preview agents are recognised; browsers and an empty UA are not."""
    assert is_preview_bot(ua) is expected


def _rule(field: str, op: str, *values: str, dest: str = "https://rule.example.com/") -> RoutingRule:
    return RoutingRule((RuleCondition(field, op, values),), dest)


@pytest.mark.parametrize(
    ("rule", "facts"),
    [
        (_rule("device_type", "eq", "mobile"), RequestFacts(user_agent=SAFARI_IPHONE)),
        (_rule("device_type", "in", "tablet", "mobile"), RequestFacts(user_agent=CHROME_ANDROID)),
        (_rule("os", "eq", "iOS"), RequestFacts(user_agent=SAFARI_IPHONE)),
        (
            _rule("os", "eq", "Mac OS X"),
            RequestFacts(user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)"),
        ),
        (_rule("os", "eq", "android"), RequestFacts(user_agent=CHROME_WIN, ch_ua_platform='"Android"')),
        (_rule("country", "in", "de", "AT"), RequestFacts(user_agent=CHROME_WIN, country="DE")),
        (_rule("language", "eq", "de"), RequestFacts(accept_language="de-AT,de;q=0.9,en;q=0.5")),
        (_rule("language", "eq", "de-at"), RequestFacts(accept_language="de-AT,de;q=0.9")),
        (_rule("referrer_host", "eq", "twitter.com"), RequestFacts(referer="https://mobile.twitter.com/x")),
        (_rule("query", "eq", "src=qr"), RequestFacts(query="a=1&src=qr")),
        (_rule("query", "in", "promo"), RequestFacts(query="promo=")),
        (_rule("query", "prefix", "ref=news"), RequestFacts(query="ref=newsletter-7")),
        (_rule("time", "between", str(NOW - 1), str(NOW + 1)), HUMAN),
        (_rule("time", "between", "2025-10-09T00:00:00", "2025-10-10T00:00:00+00:00"), HUMAN),
    ],
)
def test_each_rule_field_can_route(rule: RoutingRule, facts: RequestFacts) -> None:
    """Each rule field/op routes a matching request to the rule's destination."""
    d = decide(LINK._replace(rules=(rule,)), facts, NOW, {})
    assert (d.location, d.outcome) == ("https://rule.example.com/", "rule:0")
    assert headers(d)["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("rule", "facts"),
    [
        (_rule("device_type", "eq", "mobile"), HUMAN),
        (_rule("os", "eq", "ios"), RequestFacts(user_agent=CHROME_ANDROID)),
        (_rule("country", "eq", "DE"), HUMAN),  # no trusted country header: country rules never match
        (_rule("language", "eq", "de"), RequestFacts(accept_language="en-US,de;q=0.9")),
        (_rule("referrer_host", "eq", "twitter.com"), RequestFacts(referer="https://nottwitter.com/")),
        (_rule("referrer_host", "eq", "twitter.com"), HUMAN),
        (_rule("query", "eq", "src=qr"), RequestFacts(query="src=qr2")),
        (_rule("time", "between", str(NOW + 1), str(NOW + 2)), HUMAN),
        (_rule("time", "between", str(NOW - 2), str(NOW)), HUMAN),  # end is exclusive
        (_rule("time", "between", "not-a-date", str(NOW + 2)), HUMAN),
        (_rule("country", "between", "A", "Z"), RequestFacts(country="DE")),  # op not defined for field
    ],
)
def test_non_matching_rules_fall_through_to_destination(rule: RoutingRule, facts: RequestFacts) -> None:
    """A rule that does not hold leaves the link's own destination."""
    d = decide(LINK._replace(rules=(rule,)), facts, NOW, {})
    assert (d.location, d.outcome) == (LINK.destination, "redirect")


def test_first_matching_rule_wins_and_all_conditions_must_hold() -> None:
    """Rules are tried in order; a rule needs every condition; the first that holds wins."""
    both = RoutingRule(
        (RuleCondition("os", "eq", ("ios",)), RuleCondition("country", "eq", ("FR",))),
        "https://fr-ios.example/",
    )
    rules = (
        both,
        _rule("os", "eq", "ios", dest="https://ios.example/"),
        _rule("os", "eq", "ios", dest="https://x/"),
    )
    d = decide(LINK._replace(rules=rules), RequestFacts(user_agent=SAFARI_IPHONE, country="DE"), NOW, {})
    assert (d.location, d.outcome) == ("https://ios.example/", "rule:1")


def test_coarse_device_and_os_classes() -> None:
    """UA tokens map to the enricher's device classes and to coarse OS names."""
    assert device_type(RequestFacts(user_agent=SAFARI_IPHONE)) == "mobile"
    assert device_type(RequestFacts(user_agent="Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X)")) == "tablet"
    assert device_type(RequestFacts(user_agent=CHROME_WIN)) == "desktop"
    assert device_type(RequestFacts(user_agent=SLACK)) == "bot"
    assert device_type(RequestFacts(user_agent="")) == "other"
    assert os_name(RequestFacts(user_agent=CHROME_ANDROID)) == "android"
    assert os_name(RequestFacts(user_agent=CHROME_WIN)) == "windows"
    assert os_name(RequestFacts(user_agent="curl/8.0")) == "other"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("de", "DE"), ("US", "US"), ("XX", None), ("T1", None), ("", None), (None, None), ("DEU", None)],
)
def test_country_header_values(value: str | None, expected: object) -> None:
    """CF-IPCountry values become alpha-2 codes; unknown (XX) and Tor (T1) mean no country."""
    assert country_from_header(value) == expected
