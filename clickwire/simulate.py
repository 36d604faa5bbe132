"""``clickwire simulate``: realistic click traffic against a running redirector.

Traffic is a mix of kinds, each shaped like what real short links see:

| kind | what it looks like |
|---|---|
| human | browser UAs (desktop, mobile, tablet) from residential networks in many countries, varied referrers |
| link_preview | Slackbot, Twitterbot, facebookexternalhit… from cloud networks, often HEAD |
| email_scanner | a browser UA from Microsoft/Amazon/Google networks (Safe Links, Proofpoint…) |
| crawler | Googlebot, bingbot, AhrefsBot… |
| hammer | one IP clicking one link over and over |

Patterns (``pattern=``), for the derived events (docs/webhooks.md, "Derived events"):

| pattern | what it sends |
|---|---|
| steady | the mix above at a constant rate (no spike, no alert) |
| spike | steady for 60% of the duration, then 4x the rate of humans from one country (``country``, default FR) |
| bot-burst | steady for 60%, then 4x the rate of bots, email scanners and one hammering IP on the first link |
| failing-destination | no clicks: a site on 127.0.0.1 (``FailingDestination``), 200 then 503 |

Click patterns send clicks; ``failing-destination`` plays the other side of a link: point a link at
it and the patterns service's checks report ``link.destination_failing`` once its healthy time is up
(the checker must be allowed to reach loopback: ``CLICKWIRE_WEBHOOK_ALLOW_NETS=127.0.0.1/32``, for
development only).
Client addresses are sent in ``X-Forwarded-For``: run the redirector with
``CLICKWIRE_REDIRECTOR_TRUSTED_PROXIES=127.0.0.1/32`` so it believes them (the demo does).
Addresses are picked with geoip2fast so their country and network are real.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HUMAN_UAS = (
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36"),
    ("desktop", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                "Version/18.1 Safari/605.1.15"),
    ("desktop", "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"),
    ("mobile", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Version/18.1 Mobile/15E148 Safari/604.1"),
    ("mobile", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/131.0.0.0 Mobile Safari/537.36"),
    ("mobile", "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
               "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36"),
    ("tablet", "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Version/17.6 Mobile/15E148 Safari/604.1"),
)
PREVIEW_UAS = (
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "WhatsApp/2.23.20.0",
    "TelegramBot (like TwitterBot)",
)
CRAWLER_UAS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
)
REFERRERS = (
    (None, 40), ("https://www.google.com/", 20), ("https://t.co/abc", 8), ("https://www.facebook.com/", 8),
    ("https://www.linkedin.com/feed/", 6), ("https://mail.google.com/", 6), ("https://news.ycombinator.com/", 4),
    ("https://chatgpt.com/", 3), ("https://www.reddit.com/r/marketing/", 5),
)
COUNTRIES = (("US", 30), ("DE", 12), ("GB", 10), ("FR", 8), ("BR", 8), ("IN", 8), ("JP", 6), ("CA", 6),
             ("ES", 4), ("NL", 4), ("AU", 4))
CLOUD_ORGS = ("AMAZON-02", "MICROSOFT-CORP-MSN-AS-BLOCK", "GOOGLE-CLOUD-PLATFORM", "DIGITALOCEAN-ASN")
LANGS = {"US": "en-US,en;q=0.9", "DE": "de-DE,de;q=0.9,en;q=0.8", "GB": "en-GB,en;q=0.9",
         "FR": "fr-FR,fr;q=0.9", "BR": "pt-BR,pt;q=0.9", "IN": "en-IN,hi;q=0.8", "JP": "ja-JP,ja;q=0.9",
         "CA": "en-CA,fr-CA;q=0.8", "ES": "es-ES,es;q=0.9", "NL": "nl-NL,nl;q=0.9", "AU": "en-AU,en;q=0.9"}
DEFAULT_MIX = {"human": 0.80, "link_preview": 0.05, "email_scanner": 0.05, "crawler": 0.05, "hammer": 0.05}
PATTERNS = ("steady", "spike", "bot-burst")  # click patterns; FAILING_DESTINATION is a site, not clicks
FAILING_DESTINATION = "failing-destination"
BURST_MIX = {"hammer": 0.4, "email_scanner": 0.3, "crawler": 0.2, "link_preview": 0.1}
BURST_AFTER = 0.6  # share of the duration sent steady before the spike or burst
BURST_SPEEDUP = 4.0


@dataclass(frozen=True)
class Target:
    """A link to click: the Host it is served on, its code, and when it was created (epoch s)."""

    domain: str
    code: str
    created_s: float = 0.0
    campaign: str = ""


@dataclass
class SimStats:
    """What the simulator sent and got back."""

    sent: int = 0
    redirected: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    # Click ids (the redirector's X-Click-Id) of every click answered with a redirect.
    redirected_ids: set[str] = field(default_factory=set)

    @property
    def server_errors(self) -> int:
        """Responses with a 5xx status."""
        return sum(n for status, n in self.by_status.items() if status >= 500)


class AddressPool:
    """Public IPv4 addresses bucketed by country (residential) and by cloud organisation."""

    def __init__(self, rng: random.Random, per_bucket: int = 40, budget: int = 400_000) -> None:
        from services.enricher.geo import geoip2fast

        lookup = geoip2fast().lookup
        wanted = {c for c, _ in COUNTRIES}
        self.by_country: dict[str, list[str]] = {c: [] for c in wanted}
        self.cloud: dict[str, list[str]] = {o: [] for o in CLOUD_ORGS}
        for _ in range(budget):
            ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            found = lookup(ip)
            org = str(found.asn_name)
            if org in self.cloud and len(self.cloud[org]) < per_bucket:
                self.cloud[org].append(ip)
            elif found.country_code in wanted and len(self.by_country[found.country_code]) < per_bucket \
                    and not any(w in org.upper() for w in ("AMAZON", "GOOGLE", "MICROSOFT", "OVH", "HETZNER")):
                self.by_country[found.country_code].append(ip)
            if all(len(v) >= per_bucket for v in (*self.by_country.values(), *self.cloud.values())):
                break

    def human(self, rng: random.Random, country: str | None = None) -> tuple[str, str]:
        """A residential address and its country."""
        if country is None:
            country = rng.choices([c for c, _ in COUNTRIES], [w for _, w in COUNTRIES])[0]
        choices = self.by_country.get(country) or self.by_country["US"]
        return rng.choice(choices), country

    def cloud_ip(self, rng: random.Random) -> str:
        """An address in a cloud provider's network."""
        org = rng.choice([o for o in CLOUD_ORGS if self.cloud[o]] or [CLOUD_ORGS[0]])
        return rng.choice(self.cloud[org] or ["52.95.110.1"])


def build_request(kind: str, target: Target, pool: AddressPool, rng: random.Random, *,
                  hammer_ip: str, country: str | None = None) -> tuple[str, dict[str, str]]:
    """Method and headers of one simulated click of the given kind."""
    headers = {"Host": target.domain}
    method = "GET"
    if kind == "human":
        ip, ctry = pool.human(rng, country)
        _, ua = rng.choice(HUMAN_UAS)
        referer = rng.choices([r for r, _ in REFERRERS], [w for _, w in REFERRERS])[0]
        headers |= {"User-Agent": ua, "Accept-Language": LANGS.get(ctry, "en")}
        if referer:
            headers["Referer"] = referer
    elif kind == "link_preview":
        ip = pool.cloud_ip(rng)
        headers["User-Agent"] = rng.choice(PREVIEW_UAS)
        method = rng.choice(("GET", "HEAD"))
    elif kind == "email_scanner":
        ip = pool.cloud_ip(rng)
        headers |= {"User-Agent": HUMAN_UAS[0][1], "Accept-Language": "en-US"}
    elif kind == "crawler":
        ip = pool.cloud_ip(rng)
        headers["User-Agent"] = rng.choice(CRAWLER_UAS)
    else:  # hammer
        ip = hammer_ip
        headers["User-Agent"] = HUMAN_UAS[2][1]
    headers["X-Forwarded-For"] = ip
    return method, headers


async def simulate(base_url: str, targets: Sequence[Target], *, rate: float, duration_s: float,
                   mix: dict[str, float] | None = None, seed: int = 7, concurrency: int = 64,
                   country: str | None = None, stats: SimStats | None = None,
                   pool: AddressPool | None = None, pattern: str = "steady") -> SimStats:
    """Send about rate x duration clicks spread over the targets, shaped by ``pattern``; return what came back."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, not {pattern!r}")
    rng = random.Random(seed)
    pool = pool or AddressPool(rng)
    mix = mix or DEFAULT_MIX
    kinds, weights = list(mix), list(mix.values())
    stats = stats or SimStats()
    hammer_ip, _ = pool.human(rng, "DE")
    hammer_target = targets[0]
    steady_n = max(1, int(rate * duration_s)) if pattern == "steady" else max(1, int(rate * duration_s * BURST_AFTER))
    burst_n = 0 if pattern == "steady" else int(rate * BURST_SPEEDUP * duration_s * (1 - BURST_AFTER))
    total = steady_n + burst_n
    spike_country = country or "FR"
    queue: asyncio.Queue[tuple[str, Target, str | None] | None] = asyncio.Queue(maxsize=concurrency * 4)
    timeout = aiohttp.ClientTimeout(total=10)

    async def worker(session: aiohttp.ClientSession) -> None:
        while (item := await queue.get()) is not None:
            kind, target, from_country = item
            method, headers = build_request(kind, target, pool, rng, hammer_ip=hammer_ip, country=from_country)
            try:
                async with session.request(method, f"{base_url}/{target.code}", headers=headers,
                                           allow_redirects=False) as resp:
                    await resp.read()
                    stats.by_status[resp.status] += 1
                    if 300 <= resp.status < 400:
                        stats.redirected += 1
                        click_id = resp.headers.get("x-click-id")
                        if click_id:
                            stats.redirected_ids.add(click_id)
            except (aiohttp.ClientError, TimeoutError):
                stats.errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        started = time.monotonic()
        for i in range(total):
            # Pace against the wall clock so a slow server shows up as lower throughput, not drift.
            burst = i >= steady_n
            due = started + (steady_n / rate + (i - steady_n) / (rate * BURST_SPEEDUP) if burst else i / rate)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Outside the steady pattern, `country` names the spike's country, not every click's.
            from_country = country if pattern == "steady" else None
            if burst and pattern == "spike":
                kind, target, from_country = "human", rng.choice(targets), spike_country
            elif burst:  # bot-burst: everything on the first link
                kind, target = rng.choices(list(BURST_MIX), list(BURST_MIX.values()))[0], hammer_target
            else:
                kind = rng.choices(kinds, weights)[0]
                target = hammer_target if kind == "hammer" else rng.choice(targets)
            stats.sent += 1
            stats.by_kind[kind] += 1
            await queue.put((kind, target, from_country))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return stats


class FailingDestination:
    """A destination site that is healthy for ``healthy_s`` seconds, then answers 503 to everything."""

    def __init__(self, healthy_s: float) -> None:
        self.healthy_s = healthy_s
        self.started = time.monotonic()
        self.answers: Counter[int] = Counter()

    @property
    def failing(self) -> bool:
        """Whether the healthy time is over."""
        return time.monotonic() - self.started >= self.healthy_s

    async def _answer(self, request: web.Request) -> web.Response:
        status = 503 if self.failing else 200
        self.answers[status] += 1
        body = "" if request.method == "HEAD" else ("down for maintenance" if status == 503 else "<title>ok</title>")
        return web.Response(status=status, text=body, content_type="text/html")

    def app(self) -> web.Application:
        """Every path, GET and HEAD."""
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self._answer)
        return application

    async def serve(self, host: str, port: int) -> web.AppRunner:
        """Listen on host:port (0 picks a free port; read it from the runner); the clock starts now."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self.started = time.monotonic()
        return runner
