"""The fast path for plain links: same answers and click records as decide(), taken only when safe."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from clickwire.links import Link, RoutingRule, RuleCondition
from services.redirector import app as app_module
from services.redirector import table as table_module
from services.redirector.app import RedirectApp
from services.redirector.decide import FOREVER_MS, Decision, RequestFacts, decide, ready_answer
from services.redirector.http1 import Headers, Request, encode_head
from services.redirector.rawclick import Captured, Finisher, RawClick
from services.redirector.table import Answer, HotLink, LinkTable

NOW = 1_760_000_000_000
HOST = "clw.io"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
SLACK = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148 Safari/604.1"

PLAIN = Link(
    id=str(uuid.UUID(int=7)), workspace_id="ws-1", domain=HOST, code="spring",
    destination="https://shop.example.com/sale?x=1", created_ms=1, updated_ms=1,
    utm_source="newsletter", utm_campaign="spring",
)

# Requests that differ in everything decide() could look at.
FACTS = [
    RequestFacts(),
    RequestFacts(user_agent=CHROME, referer="https://t.co/x", accept_language="de-DE,de;q=0.9"),
    RequestFacts(method="HEAD", user_agent=SLACK, query="qr=1&utm_source=other", country="DE"),
    RequestFacts(user_agent=IPHONE, ch_ua_mobile="?1", ch_ua_platform='"iOS"', query="ref=a"),
]


def _hot(link: Link) -> HotLink:
    table = LinkTable()
    table.upsert(link)
    hot = table.lookup(link.domain, link.code)
    assert hot is not None
    return hot


def _plain_variants() -> Iterator[Link]:
    for status, expires in itertools.product((301, 302, 307, 308), (None, NOW + 3_600_000)):
        yield replace(PLAIN, redirect_type=status, expires_ms=expires)
    yield replace(PLAIN, utm_source=None, utm_campaign=None, destination="https://a.example/#frag")
    yield replace(PLAIN, preview_title="ignored: bots are redirected", bot_policy="redirect")


@pytest.mark.parametrize("link", list(_plain_variants()))
def test_ready_answer_is_what_decide_answers_for_any_request(link: Link) -> None:
    """For a plain link, every request, at any time before valid_until and any click count, gets the ready answer."""
    hot = _hot(link)
    answer = ready_answer(hot, NOW)
    assert answer is not None
    assert (answer.key, answer.link_id, answer.workspace_id) == (link.id.encode(), link.id, "ws-1")
    for facts, now, stats in itertools.product(FACTS, (NOW, answer.valid_until - 1), ({}, {link.id: 10**6})):
        d = decide(hot, facts, now, stats)
        assert (d.status, d.location, encode_head(d.status, d.headers), d.body) == \
            (answer.status, answer.location, answer.head, None)


def test_ready_answer_of_an_expiring_permanent_redirect_ends_before_its_max_age_would_shrink() -> None:
    """valid_until is 90 s before expiry: one millisecond later decide() sends a shorter max-age."""
    hot = _hot(replace(PLAIN, redirect_type=308, expires_ms=NOW + 3_600_000))
    answer = ready_answer(hot, NOW)
    assert answer is not None
    assert answer.valid_until == NOW + 3_600_000 - 90_000
    later = decide(hot, RequestFacts(), answer.valid_until + 1_000, {})
    assert dict(later.headers)["cache-control"] == "private, max-age=89"
    assert _read_head(answer.head)[1]["cache-control"] == "private, max-age=90"
    assert ready_answer(_hot(PLAIN), NOW).valid_until == FOREVER_MS  # type: ignore[union-attr]


RULE = RoutingRule((RuleCondition("os", "eq", ("ios",)),), "https://apps.apple.com/app/id1")


@pytest.mark.parametrize(
    "link",
    [
        replace(PLAIN, blocked=True),
        replace(PLAIN, bot_policy="preview"),
        replace(PLAIN, bot_policy="refuse"),
        replace(PLAIN, max_clicks=1_000),
        replace(PLAIN, rules=(RULE,)),
        replace(PLAIN, expires_ms=NOW + 90_000),  # within the last 90 s
        replace(PLAIN, expires_ms=NOW - 1, expired_url="https://shop.example.com/over"),
    ],
    ids=["blocked", "preview", "refuse", "cap", "rules", "expiring", "expired"],
)
def test_links_whose_answer_can_vary_have_no_ready_answer(link: Link) -> None:
    """Blocked, bot-policy, capped, routed and (nearly) expired links always go through decide()."""
    assert ready_answer(_hot(link), NOW) is None


# -- the app, with requests as the server parses them and a recording responder ----------------


def _request(path: str, headers: dict[str, str], bad: tuple[str, ...] = (), method: str = "GET", query: str = "",
             client: str = "203.0.113.9") -> Request:
    """A request as http1.Connection builds it; `bad` names headers whose value was not UTF-8."""
    values = Headers(headers, frozenset(bad)) if bad else headers
    return Request(method, path, query, values, None, client)


class Proto:
    def __init__(self) -> None:
        self.sent: list[tuple[int, dict[str, str], bytes | str | None]] = []

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.sent.append((status, dict(headers), None))

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.sent.append((status, dict(headers), body))

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.sent.append((status, dict(headers), body))

    def response_prepared(self, head: bytes) -> None:
        """The fast path's pre-encoded head, read back to compare with the slow path's answers."""
        self.sent.append((*_read_head(head), None))


def _read_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, headers) of an encoded head (http1.encode_head, plus the click id line)."""
    status_line, *lines = head.decode().split("\r\n")
    assert lines[-1] == ""  # every header line ends with CRLF
    return int(status_line.split(" ")[1]), dict(line.split(": ", 1) for line in lines[:-1])


class Publisher:
    def __init__(self) -> None:
        self.clicks: list[tuple[bytes, Captured]] = []

    def submit(self, key: bytes, click: Captured) -> None:
        self.clicks.append((key, click))


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def time_ns(self) -> int:
        return self.ms * 1_000_000


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *links: Link) -> None:
        self.table = LinkTable()
        for link in links:
            self.table.upsert(link)
        self.counts: dict[str, int] = {}
        self.publisher = Publisher()
        self.app = RedirectApp(self.table, self.counts, publisher=self.publisher)  # type: ignore[arg-type]
        self.clock = Clock()
        monkeypatch.setattr(app_module, "time", self.clock)
        self.decided: list[Decision] = []

        def counting(*args: Any) -> Decision:
            d = decide(*args)
            self.decided.append(d)
            return d

        monkeypatch.setattr(app_module, "decide", counting)

    def get(self, path: str = "/spring", host: str = HOST, **kw: Any) -> tuple[int, dict[str, str], Any]:
        proto = Proto()
        values = {"host": host, **kw.pop("headers", {})}
        self.app(_request(path, values, kw.pop("bad", ()), **kw), proto)
        (sent,) = proto.sent
        return sent


BROWSER = {"user-agent": CHROME, "referer": "https://t.co/x", "accept-language": "de-DE", "sec-purpose": "prefetch",
           "sec-ch-ua": '"Chromium";v="126"', "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"Windows"'}


def _finished(h: Harness) -> list[tuple[bytes, RawClick]]:
    finish = Finisher("r-1")
    return [(key, finish(click)) for key, click in h.publisher.clicks]


def test_second_click_on_a_plain_link_skips_decide_and_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first click decides and keeps the answer; later ones reuse it: same status, headers and click record."""
    h = Harness(monkeypatch, PLAIN)
    first = h.get(headers=BROWSER, query="qr=1")
    second = h.get(headers=BROWSER, query="qr=1")
    third = h.get(method="HEAD", headers={"user-agent": SLACK})
    assert len(h.decided) == 1
    assert first[0] == second[0] == third[0] == 302
    assert first[1]["x-click-id"] != second[1]["x-click-id"]
    without_id = [{k: v for k, v in sent[1].items() if k != "x-click-id"} for sent in (first, second, third)]
    assert without_id[0] == without_id[1] == without_id[2] == dict(h.decided[0].headers)
    assert third[2] is None
    (k1, c1), (k2, c2), (_, c3) = _finished(h)
    assert k1 == k2 == PLAIN.id.encode()
    assert c1[0] == first[1]["x-click-id"]
    assert c2[0] == second[1]["x-click-id"]
    assert c1[1:] == c2[1:]  # same time on the fake clock: everything but the click id is equal
    assert c1[2:8] == (PLAIN.id, "ws-1", HOST, "spring", "GET", "203.0.113.9")
    assert c1[8:19] == (CHROME, "https://t.co/x", "de-DE", "prefetch", '"Chromium";v="126"', "?0", '"Windows"',
                        "qr=1", True, 302, first[1]["location"])
    assert (c3[6], c3[8], c3[9], c3[16]) == ("HEAD", SLACK, None, False)


@pytest.mark.parametrize(
    "link",
    [replace(PLAIN, bot_policy="preview"), replace(PLAIN, max_clicks=5), replace(PLAIN, rules=(RULE,)),
     replace(PLAIN, blocked=True), replace(PLAIN, expires_ms=NOW + 60_000)],
    ids=["preview", "cap", "rules", "blocked", "expiring"],
)
def test_links_that_need_decide_get_it_on_every_click(monkeypatch: pytest.MonkeyPatch, link: Link) -> None:
    """No ready answer is kept for links whose answer can vary: every click is decided."""
    h = Harness(monkeypatch, link)
    for _ in range(3):
        h.get(headers=BROWSER)
    assert len(h.decided) == 3
    assert h.table.answers == {}


def test_capped_link_stops_at_its_cap_on_a_later_click(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cap reached between two clicks answers 410 on the next one (no stale ready answer)."""
    h = Harness(monkeypatch, replace(PLAIN, max_clicks=2))
    assert h.get()[0] == 302
    h.counts[PLAIN.id] = 2
    assert h.get()[0] == 410


def test_an_update_or_delete_replaces_the_ready_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """After an upsert the next click gets the new destination; after a delete, 404."""
    h = Harness(monkeypatch, PLAIN)
    h.get()
    h.get()
    h.table.upsert(replace(PLAIN, destination="https://new.example/", utm_source=None, utm_campaign=None))
    assert h.get()[1]["location"] == "https://new.example/"
    h.table.upsert(replace(PLAIN, bot_policy="refuse"))
    assert h.get(headers={"user-agent": SLACK})[0] == 403
    h.table.remove(HOST, "spring")
    assert h.get()[0] == 404
    assert h.table.answers == {}


def test_ready_answer_is_not_used_past_valid_until(monkeypatch: pytest.MonkeyPatch) -> None:
    """A permanent redirect expiring soon is decided again once the cached max-age would be wrong."""
    h = Harness(monkeypatch, replace(PLAIN, redirect_type=301, expires_ms=NOW + 100_000))
    assert h.get()[1]["cache-control"] == "private, max-age=90"
    h.clock.ms = NOW + 5_000
    assert h.get()[1]["cache-control"] == "private, max-age=90"
    assert len(h.decided) == 1
    h.clock.ms = NOW + 12_000
    assert h.get()[1]["cache-control"] == "private, max-age=88"
    h.clock.ms = NOW + 100_000
    assert h.get()[0] == 410
    assert len(h.decided) == 3


@pytest.mark.parametrize(
    ("kw", "status"),
    [
        ({"headers": {"user-agent": "x" * 5000}}, 400),
        ({"headers": {"referer": "https://r.example/" + "x" * 5000}}, 400),
        ({"bad": ("user-agent",)}, 400),
        ({"host": "other.example"}, 404),  # served (no domain list), no such link
        ({"method": "POST"}, 405),
        ({"path": "/spring/x"}, 400),
        ({"path": "/_/nope"}, 404),
        ({"path": "/" + "a" * 3000}, 414),
        ({"query": "q=" + "x" * 5000}, 414),
    ],
)
def test_bad_requests_for_a_cached_link_are_refused_as_before(monkeypatch: pytest.MonkeyPatch,
                                                              kw: dict[str, Any], status: int) -> None:
    """With the link's answer ready, oversized or invalid requests still get the slow path's 4xx."""
    h = Harness(monkeypatch, PLAIN)
    h.get()
    assert h.table.answers
    assert h.get(**kw)[0] == status


def test_host_spellings_share_the_ready_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host with port, upper case or a trailing dot is the same host; an unserved host is still 421."""
    h = Harness(monkeypatch, PLAIN)
    h.app = RedirectApp(h.table, h.counts, publisher=h.publisher, domains=(HOST,))  # type: ignore[arg-type]
    for host in ("CLW.io:443", "clw.io.", "CLW.io:443"):
        assert h.get(host=host)[0] == 302
    assert len(h.decided) == 2  # one per new spelling
    assert h.get(host="other.example")[0] == 421


def test_answer_cache_is_bounded_and_evicts_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    """remember() keeps at most ANSWERS_MAX answers, dropping the oldest first."""
    monkeypatch.setattr(table_module, "ANSWERS_MAX", 2)
    table = LinkTable()
    answer = Answer(302, "https://a.example/", b"k", "k", "w", FOREVER_MS, b"HTTP/1.1 302 Found\r\n")
    for code in ("a", "b", "a", "c"):
        table.remember(HOST, code, answer)
    assert list(table.answers) == [(HOST, "b"), (HOST, "c")]


def _captured(**kw: Any) -> Captured:
    base: dict[str, Any] = dict(
        click_id=b"c", ts=1, link_id="L", ws="W", domain="d", code="x", method="GET", peer="10.0.0.5",
        ua="ua", ref=None, al=None, purpose=None, ch_ua=None, ch_mobile=None, ch_platform=None, query="",
        status=302, dest="https://a.example/", xff=None, fwd=None,
    )
    base.update(kw)
    return tuple(base.values())


@pytest.mark.parametrize(
    ("kw", "trusted", "ip", "qr"),
    [
        ({}, (), "10.0.0.5", False),
        ({"peer": "2001:db8::1"}, (), "2001:db8::1", False),
        ({"xff": "1.2.3.4"}, (), "10.0.0.5", False),  # no trusted proxy: forwarded headers ignored
        ({"xff": "1.2.3.4"}, ("10.0.0.0/8",), "1.2.3.4", False),
        ({"query": "a=1&qr=1"}, (), "10.0.0.5", True),
        ({"query": "qr=10"}, (), "10.0.0.5", False),
    ],
)
def test_finisher_fills_client_ip_qr_and_instance(kw: dict[str, Any], trusted: tuple[str, ...], ip: str,
                                                  qr: bool) -> None:
    """The publisher-side finishing step derives client_ip, qr and redirector_id as the response path used to."""
    import ipaddress

    finish: Callable[[Captured], RawClick] = Finisher("r-1", tuple(ipaddress.ip_network(n) for n in trusted))
    click = finish(_captured(**kw))
    assert (click[7], click[16], click[19]) == (ip, qr, "r-1")
    assert click[17:19] == (302, "https://a.example/")
