"""The spliced hot path against the dict path (decode -> enrich -> encode) it stands in for."""

from __future__ import annotations

from typing import Any

import pytest

from clickwire.avrobin import varint as _varint
from clickwire.codec import codec_for
from clickwire.topics import Topic
from services.enricher.avro import Unsupported
from services.enricher.chain import Enricher, LinkInfo
from services.enricher.fastpath import FastPath
from services.enricher.stream import ClickStream, Source
from services.enricher.velocity import LocalVelocity
from tests.unit.enricher.conftest import load_bot_uas, load_browser_rows, raw_click

RAW = codec_for(Topic.CLICKS_RAW)
NOW = 1_700_000_000_500
T = 1_700_000_000_000
SRC = Source("clicks.raw", 0, 1)
CLOUD_IPS = ["40.107.1.1", "52.95.110.1"]  # Microsoft, Amazon (test_bots.py)
LINKS = {
    "lnk_full": LinkInfo("ws_9", ("a", "ü", ""), "c1", "nl", None, "ca", None, "", T - 30_000),
    "lnk_old": LinkInfo("ws_8", (), None, None, None, None, None, None, T - 3_600_000),
    "lnk_bare": LinkInfo(),
}
REFERERS = [None, "https://www.google.com/search?q=x", "https://eur01.safelinks.protection.outlook.com/?url=x",
            "https://sho.rt/other", "not a url", "", "https://urldefense.com/v3/__https://x.y"]


def _clicks() -> list[dict[str, Any]]:
    uas = [r["ua"] for r in load_browser_rows("browser_user_agents_sample.jsonl")][:120]
    uas += [*load_bot_uas("crawler_user_agents_sample.txt")[:40], "", "curl/8.4.0"]
    ips = ["81.2.69.142", "10.0.0.1", "2001:4860:4860::8888", "::ffff:81.2.69.142", "garbage", "", *CLOUD_IPS]
    links = [*LINKS, "lnk_unknown", "lnk_full"]  # five: every IP meets every link
    out = []
    for i, ua in enumerate(uas * 3):
        out.append(raw_click(
            click_id=f"c{i}", user_agent=ua, client_ip=ips[i % len(ips)], link_id=links[i % len(links)],
            ts_ms=T + i, referer=REFERERS[i % len(REFERERS)], workspace_id="" if i % 3 == 0 else "ws_1",
            method="HEAD" if i % 17 == 0 else "GET" if i % 19 else "", purpose="prefetch" if i % 13 == 0 else None,
            ch_ua='"HeadlessChrome";v="124"' if i % 29 == 0 else '"Chromium";v="124"' if i % 7 == 0 else None,
            ch_ua_mobile="?1" if i % 11 == 0 else None, ch_ua_platform='"Android"' if i % 23 == 0 else None,
            query="ü=1" if i % 5 == 0 else "", destination=None if i % 9 == 0 else "https://x.y/é",
        ))
    # the same (IP, link) many times in a minute: the velocity signal fires part-way through
    out += [raw_click(click_id=f"v{i}", ts_ms=T + i, link_id="lnk_full") for i in range(30)]
    # the same browser from a cloud through two mail rewriters: a scanner named after each rewriter
    out += [raw_click(click_id=f"r{i}", client_ip=CLOUD_IPS[1], referer=ref, link_id="lnk_old")
            for i, ref in enumerate(REFERERS[2::4])]
    return out


def _both(enricher: Enricher, clicks: list[dict[str, Any]], cache_size: int) -> int:
    stream = ClickStream(enricher)
    fast = FastPath(enricher, RAW.header, stream.enriched_codec.header, cache_size=cache_size)
    slow_velocity, fast_velocity = LocalVelocity(), LocalVelocity()
    enriched_ms = _varint(NOW)
    bots = 0
    for raw in clicks:
        value = RAW.encode(raw)
        slow = stream.process(value, SRC, LINKS.get, slow_velocity.hit, now_ms=NOW)
        key, payload, link_id, is_bot = fast.process(value, LINKS.get, fast_velocity.count, enriched_ms)
        assert (key, payload, link_id, is_bot) == (slow.key, slow.value, slow.link_id, slow.is_bot), raw
        bots += is_bot
    return bots


@pytest.mark.parametrize("cache_size", [1 << 16, 3])
def test_fast_path_is_byte_identical_to_the_dict_path(enricher: Enricher, cache_size: int) -> None:
    """Realistic and edge-case clicks, with and without links, cloud IPs, rewriters, HEAD, prefetch,
    client hints and velocity, come out exactly as decode -> enrich -> encode writes them, also
    while small caches are emptied and refilled."""
    clicks = _clicks()
    bots = _both(enricher, clicks, cache_size)
    assert 0 < bots < len(clicks)  # both verdicts were exercised


def _payload(**overrides: Any) -> bytes:
    return RAW.encode(raw_click(**overrides))


@pytest.mark.parametrize("value", [
    b"garbage",
    _payload()[:-3],
    _payload() + b"\x00",
    _payload(link_id=""),
    _payload(click_id=""),
    # click_id "c" with invalid UTF-8 in its place
    _payload(click_id="c").replace(b"\x02c", b"\x02\xff", 1),
    # the ts_ms varint written with a redundant trailing zero byte
    RAW.header + b"\x02c" + _varint(T)[:-1] + bytes([_varint(T)[-1] | 0x80]) + b"\x00"
    + _payload(click_id="c")[len(RAW.header) + 2 + len(_varint(T)):],
])
def test_odd_payloads_are_left_to_the_slow_path(enricher: Enricher, value: bytes) -> None:
    """Anything the splice cannot copy exactly is refused, so ClickStream decides (or dead-letters)."""
    fast = FastPath(enricher, RAW.header, codec_for(Topic.CLICKS_ENRICHED).header)
    with pytest.raises(Unsupported):
        fast.process(value, LINKS.get, LocalVelocity().count, _varint(NOW))


def test_a_changed_link_is_joined_again(enricher: Enricher) -> None:
    """A new version of a link replaces the cached join."""
    fast = FastPath(enricher, RAW.header, codec_for(Topic.CLICKS_ENRICHED).header)
    enriched = codec_for(Topic.CLICKS_ENRICHED)
    links = {"lnk_1": LinkInfo("ws", ("a",), "first")}
    value = _payload()
    first = enriched.decode(fast.process(value, links.get, LocalVelocity().count, _varint(NOW))[1])
    links["lnk_1"] = LinkInfo("ws", ("b",), "second")
    second = enriched.decode(fast.process(value, links.get, LocalVelocity().count, _varint(NOW))[1])
    assert (first["campaign"], second["campaign"], second["tags"]) == ("first", "second", ["b"])
