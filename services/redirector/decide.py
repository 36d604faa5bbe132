"""The redirect decision: from a link and the facts of one request to the HTTP answer. Pure, no I/O.

Order of checks (first that applies answers):
  unknown code -> 404 · blocked -> 451 warning page · expired -> 302 to expired_url, else 410 ·
  link-preview bot with policy "refuse" -> 403, "preview" -> 200 Open Graph page ·
  human-click cap reached -> 410 · routing rules (first match wins) · the link's redirect.

Caching: browsers keep 301/308 answers with no Cache-Control forever, so later clicks from that
browser would never reach us (and never be counted or fire webhooks). Like Bitly and Dub we let
private caches keep a permanent redirect for 90 s only ("private, max-age=90": no shared cache, since
answers can depend on the user agent), and send "no-store" for 302/307 and for every answer that can
change from one click to the next (routing rules, click caps, pages).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from clickwire.links import RuleCondition
from services.redirector import pages
from services.redirector.http1 import encode_head
from services.redirector.table import Answer, HotLink

PERMANENT_MAX_AGE_S: Final = 90
FOREVER_MS: Final = 2**63 - 1
_NO_STORE: Final = ("cache-control", "no-store")
_PAGE_HEADERS: Final = (
    ("content-type", pages.CONTENT_TYPE),
    _NO_STORE,
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", pages.CSP),
)

# Link-preview agents: they fetch a link when it is pasted into a chat or post, so a human did not
# click. Sources: each vendor's crawler documentation (URLs below); substring match, case-insensitive.
# The enricher classifies every bot with crawlerdetect; this list only drives the bot_policy choice.
PREVIEW_AGENTS: Final = (
    "facebookexternalhit",  # https://developers.facebook.com/docs/sharing/webmasters/web-crawlers/
    "facebookcatalog",  # same page
    "twitterbot",  # https://developer.x.com/en/docs/x-for-websites/cards/guides/getting-started
    "slackbot",  # https://api.slack.com/robots (Slackbot-LinkExpanding)
    "slack-imgproxy",  # https://api.slack.com/robots
    "linkedinbot",  # https://www.linkedin.com/help/linkedin/answer/a521928
    "discordbot",  # https://discord.com/developers/docs/resources/message#embed-object
    "telegrambot",  # https://core.telegram.org/bots/webapps (link previews, "TelegramBot (like TwitterBot)")
    "whatsapp",  # https://faq.whatsapp.com (link previews, "WhatsApp/2.x")
    "applebot",  # https://support.apple.com/en-us/119829 (iMessage previews)
    "skypeuripreview",  # Skype and Microsoft Teams previews (observed UA "SkypeUriPreview Preview/0.5")
    "microsoftpreview",  # https://learn.microsoft.com (Outlook/Teams "MicrosoftPreview/2.0")
    "redditbot",  # https://support.reddithelp.com (embeds, "redditbot/1.0")
    "pinterest",  # https://help.pinterest.com/en/business/article/pinterest-crawler
    "vkshare",  # https://vk.com/dev/sites (share previews)
    "embedly",  # https://embed.ly/docs (Embedly previews used by Medium, Reddit, ...)
    "iframely",  # https://iframely.com/docs (previews)
    "mastodon",  # https://docs.joinmastodon.org (PreviewCard fetcher, "Mastodon/4.x")
    "cardyb",  # Bluesky card fetcher "Bluesky Cardyb/1.1", https://github.com/bluesky-social
    "snap url preview",  # Snapchat "Snap URL Preview Service"
    "viber",  # Viber link previews
    "zoombot",  # https://support.zoom.com (Zoom chat link previews)
)
_PREVIEW_RE: Final = re.compile("|".join(re.escape(a) for a in PREVIEW_AGENTS), re.IGNORECASE)

# OS names rule values may use (the enricher's ua-parser names included) -> the names matched here.
_OS_ALIASES: Final = {"mac os x": "macos", "os x": "macos", "mac os": "macos", "chrome os": "chromeos"}


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the redirector knows about one request, straight from its headers.

    `country` is an ISO 3166 alpha-2 code from a trusted edge header (Cloudflare's CF-IPCountry or a
    load balancer's equivalent), read only when settings say such a proxy is in front; the redirector
    has no geo database of its own (geo is the enricher's job), so without the header country rules
    never match.
    """

    method: str = "GET"
    user_agent: str = ""
    referer: str | None = None
    accept_language: str | None = None
    query: str = ""
    country: str | None = None
    ch_ua_mobile: str | None = None
    ch_ua_platform: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The HTTP answer: status, Location (redirects only), body (pages only), headers, and why."""

    status: int
    location: str | None
    body: bytes | None
    headers: tuple[tuple[str, str], ...]
    outcome: str


def country_from_header(value: str | None) -> str | None:
    """Return an upper-case alpha-2 country from a CF-IPCountry-style value, None for unknown/Tor."""
    if not value or len(value) != 2 or not value.isalpha() or not value.isascii():
        return None
    value = value.upper()
    return None if value in {"XX", "T1"} else value


def is_preview_bot(user_agent: str) -> bool:
    """Return True when the User-Agent names a known link-preview agent."""
    return bool(user_agent) and _PREVIEW_RE.search(user_agent) is not None


def decide(link: HotLink | None, facts: RequestFacts, now_ms: int, stats: Mapping[str, int]) -> Decision:
    """Decide the answer to one request for `link` (None: unknown code).

    `stats` maps link id to human clicks so far (the materialised links.stats topic); caps are
    therefore enforced with the enricher's lag (about a second), and bots never count against them.
    """
    if link is None:
        return _page(404, pages.NOT_FOUND, "not_found")
    if link.blocked:
        return _page(451, pages.BLOCKED, "blocked")
    if link.expires_ms is not None and now_ms >= link.expires_ms:
        if link.expired_url:
            return Decision(
                302, link.expired_url, None, (("location", link.expired_url), _NO_STORE), "expired"
            )
        return _page(410, pages.GONE, "expired")
    if link.bot_policy != "redirect" and is_preview_bot(facts.user_agent):
        if link.bot_policy == "refuse":
            return _page(403, pages.REFUSED, "bot_refused")
        body = pages.preview_page(
            f"https://{link.domain}/{link.code}",
            link.preview_title,
            link.preview_description,
            link.preview_image,
        )
        return _page(200, body, "bot_preview")
    if link.max_clicks is not None and stats.get(link.link_id, 0) >= link.max_clicks:
        return _page(410, pages.GONE, "cap_reached")

    location = link.destination
    outcome = "redirect"
    for i, rule in enumerate(link.rules):
        if all(_holds(c, facts, now_ms) for c in rule.conditions):
            location = rule.destination
            outcome = f"rule:{i}"
            break
    status = link.redirect_type
    cache = "no-store"
    if status in (301, 308) and not link.rules and link.max_clicks is None:
        max_age = PERMANENT_MAX_AGE_S
        if link.expires_ms is not None:
            # Never let a cached redirect outlive the link.
            max_age = min(max_age, (link.expires_ms - now_ms) // 1000)
        if max_age > 0:
            cache = f"private, max-age={max_age}"
    return Decision(status, location, None, (("location", location), ("cache-control", cache)), outcome)


def ready_answer(link: HotLink, now_ms: int) -> Answer | None:
    """The answer decide() gives `link` for any request and any click count from `now_ms` until the
    answer's valid_until, or None when it can depend on the request or the counts.

    That is a link that is not blocked, redirects bots like humans and has no click cap and no
    routing rules. An expiry ends the answer 90 s early, so the max-age of a permanent redirect
    (never beyond the expiry) is still the full 90 s throughout.
    """
    if link.blocked or link.bot_policy != "redirect" or link.max_clicks is not None or link.rules:
        return None
    until = FOREVER_MS
    if link.expires_ms is not None:
        until = link.expires_ms - PERMANENT_MAX_AGE_S * 1000
        if now_ms >= until:
            return None
    # decide() itself makes the answer, so the two cannot disagree.
    d = decide(link, RequestFacts(), now_ms, {})
    if d.location is None:
        return None
    try:
        head = encode_head(d.status, d.headers)
    except ValueError:
        return None  # the slow path refuses to write it
    return Answer(d.status, d.location, link.link_id.encode(), link.link_id, link.workspace_id, until, head)


def _page(status: int, body: bytes, outcome: str) -> Decision:
    return Decision(status, None, body, _PAGE_HEADERS, outcome)


def device_type(facts: RequestFacts) -> str:
    """Return a coarse device class in the enricher's vocabulary (desktop, mobile, tablet, tv, ...)."""
    ua = facts.user_agent.lower()
    if is_preview_bot(ua):
        return "bot"
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if facts.ch_ua_mobile == "?1" or any(t in ua for t in ("mobi", "iphone", "ipod", "android")):
        return "mobile"
    if any(
        t in ua for t in ("smart-tv", "smarttv", "googletv", "appletv", "hbbtv", "tizen", "web0s", "roku")
    ):
        return "tv"
    if any(t in ua for t in ("playstation", "xbox", "nintendo")):
        return "console"
    if any(t in ua for t in ("windows", "macintosh", "x11", "cros")):
        return "desktop"
    return "other"


def os_name(facts: RequestFacts) -> str:
    """Return a coarse OS name: ios, android, windows, macos, chromeos, linux or other."""
    if facts.ch_ua_platform:
        platform = facts.ch_ua_platform.strip('"').lower()
        platform = _OS_ALIASES.get(platform, platform)
        if platform in {"android", "windows", "macos", "chromeos", "linux", "ios"}:
            return platform
    ua = facts.user_agent.lower()
    if any(t in ua for t in ("iphone", "ipad", "ipod")):
        return "ios"
    if "android" in ua:
        return "android"
    if "windows" in ua:
        return "windows"
    if "cros" in ua:
        return "chromeos"
    if "macintosh" in ua or "mac os x" in ua:
        return "macos"
    if "linux" in ua:
        return "linux"
    return "other"


def _holds(cond: RuleCondition, facts: RequestFacts, now_ms: int) -> bool:
    """Whether one rule condition holds; unknown fields or ops never match."""
    values = cond.values
    if cond.field == "time":
        return cond.op == "between" and _in_window(values, now_ms)
    if cond.field == "query":
        return _query_matches(cond.op, values, facts.query)
    candidates = _candidates(cond.field, facts)
    if not candidates:
        return False
    wanted = [v.lower() for v in values]
    if cond.field == "os":
        wanted = [_OS_ALIASES.get(v, v) for v in wanted]
    if cond.op in ("eq", "in"):
        if cond.field == "referrer_host":
            return any(c == v or c.endswith("." + v) for c in candidates for v in wanted)
        return any(c in wanted for c in candidates)
    if cond.op == "prefix":
        return any(c.startswith(v) for c in candidates for v in wanted)
    return False


def _candidates(field: str, facts: RequestFacts) -> list[str]:
    """The request's lower-case values for a rule field (several for language: "en-us" and "en")."""
    if field == "device_type":
        return [device_type(facts)]
    if field == "os":
        return [os_name(facts)]
    if field == "country":
        return [facts.country.lower()] if facts.country else []
    if field == "language":
        if not facts.accept_language:
            return []
        # Browsers list the preferred language first; q-values only reorder the rest.
        tag = facts.accept_language.split(",", 1)[0].split(";", 1)[0].strip().lower()
        if not tag or tag == "*":
            return []
        return [tag, tag.split("-", 1)[0]]
    if field == "referrer_host":
        if not facts.referer:
            return []
        try:
            host = urlsplit(facts.referer).hostname
        except ValueError:
            return []
        return [host] if host else []
    return []


def _query_matches(op: str, values: tuple[str, ...], query: str) -> bool:
    """Query values are "name=value" (that exact value) or "name" (present with any value)."""
    params = parse_qsl(query, keep_blank_values=True)
    for spec in values:
        name, has_value, wanted = spec.partition("=")
        for key, value in params:
            if key != name:
                continue
            if not has_value or (op in ("eq", "in") and value == wanted):
                return True
            if op == "prefix" and value.startswith(wanted):
                return True
    return False


def _in_window(values: tuple[str, ...], now_ms: int) -> bool:
    """Whether start <= now < end, bounds given as epoch ms or ISO-8601 (naive means UTC)."""
    if len(values) != 2:
        return False
    try:
        start, end = (_to_ms(v) for v in values)
    except ValueError:
        return False
    return start <= now_ms < end


def _to_ms(value: str) -> int:
    value = value.strip()
    if value.isdecimal():
        return int(value)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
