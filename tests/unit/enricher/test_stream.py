"""The stream glue (decode -> enrich -> encode), link index, velocity, stats and `clickwire enrich`."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from clickwire.codec import codec_for
from clickwire.deadletter import InvalidMessage
from clickwire.topics import Topic
from services.enricher.chain import Enricher, LinkInfo
from services.enricher.cli import enrich_lines
from services.enricher.links import LinkIndex
from services.enricher.settings import EnricherSettings, persisted_secret
from services.enricher.stats import LinkCounts, link_stats_record
from services.enricher.stream import ClickStream, Source
from services.enricher.velocity import LocalVelocity, PartitionVelocity, velocity_key
from tests.unit.enricher.conftest import raw_click

SRC = Source("clicks.raw", 3, 42, b"lnk_1")
LINK = {"id": "lnk_1", "workspace_id": "ws_9", "domain": "sho.rt", "code": "abc", "destination": "https://x.y/",
        "created_ms": 1_699_999_000_000, "updated_ms": 1_699_999_000_000, "tags": ["a"], "campaign": "c1",
        "utm_source": "nl"}


@pytest.fixture(scope="module")
def stream(enricher: Enricher) -> ClickStream:
    """The glue around the session's Enricher."""
    return ClickStream(enricher)


def test_process_decodes_joins_and_encodes_keyed_by_link(stream: ClickStream) -> None:
    """A raw Avro click comes out as an enriched Avro record keyed by link id with the link joined."""
    value = codec_for(Topic.CLICKS_RAW).encode(raw_click())
    index = LinkIndex()
    index.apply("sho.rt/abc", LINK)
    out = stream.process(value, SRC, index.get, lambda raw: 1, now_ms=5)
    record = codec_for(Topic.CLICKS_ENRICHED).decode(out.value)
    assert out.key == b"lnk_1"
    assert out.link_id == "lnk_1"
    assert out.is_bot is False
    assert (record["tags"], record["campaign"], record["utm_source"], record["enriched_ms"]) == (["a"], "c1", "nl", 5)


@pytest.mark.parametrize(
    ("value", "error_class"),
    [(b"garbage", "MalformedPayloadError"), (b"\xc3\x01" + bytes(8) + b"x", "UnknownSchemaError"),
     (None, "empty_value")],
)
def test_undecodable_records_raise_invalid_message_with_source(
    stream: ClickStream, value: bytes | None, error_class: str
) -> None:
    """Bytes that are not a raw click become an InvalidMessage naming topic, partition, offset and reason."""
    with pytest.raises(InvalidMessage) as info:
        stream.process(value, SRC, lambda _: None, lambda _: 0, now_ms=0)
    assert (info.value.topic, info.value.partition, info.value.offset) == ("clicks.raw", 3, 42)
    assert info.value.error_class == error_class
    assert info.value.reason


def test_empty_required_field_is_invalid(stream: ClickStream) -> None:
    """A decodable click without a link id is dead-lettered as missing_field."""
    value = codec_for(Topic.CLICKS_RAW).encode(raw_click(link_id=""))
    with pytest.raises(InvalidMessage, match="link_id"):
        stream.process(value, SRC, lambda _: None, lambda _: 0, now_ms=0)


def test_link_index_follows_versions_and_tombstones() -> None:
    """A new version replaces the old id, a tombstone removes it."""
    index = LinkIndex()
    index.apply("sho.rt/abc", LINK)
    assert index.get("lnk_1") == LinkInfo("ws_9", ("a",), "c1", "nl", None, None, None, None, 1_699_999_000_000)
    index.apply("sho.rt/abc", {**LINK, "id": "lnk_2"})
    assert index.get("lnk_1") is None
    assert index.get("lnk_2") is not None
    index.apply("sho.rt/abc", None)
    assert len(index) == 0


def test_local_velocity_counts_per_ip_link_and_window() -> None:
    """Counts grow per (IP, link) within a window and restart in the next one."""
    velocity = LocalVelocity(60)
    a = raw_click(ts_ms=60_000)
    assert [velocity.hit(a) for _ in range(3)] == [1, 2, 3]
    assert velocity.hit(raw_click(ts_ms=60_000, client_ip="1.1.1.1")) == 1
    assert velocity.hit(raw_click(ts_ms=120_000)) == 1
    assert velocity_key(a) == "81.2.69.142|lnk_1"


def test_link_counts_start_from_published_totals_and_split_humans_and_bots() -> None:
    """Counts add to links.stats totals, report each changed link once, and render as link_stats records."""
    counts = LinkCounts()
    counts.rebase({"l": (10, 1)})
    for is_bot in (False, False, True):
        counts.add(0, "l", is_bot)
    counts.add(1, "new", False)
    assert sorted(counts.take_dirty()) == [("l", (12, 2)), ("new", (1, 0))]
    assert counts.take_dirty() == []
    record = link_stats_record("l", counts.get("l") or (0, 0), 7)
    assert codec_for(Topic.LINK_STATS).decode(codec_for(Topic.LINK_STATS).encode(record))["bot_clicks"] == 2


def test_link_counts_forget_revoked_partitions() -> None:
    """Links of a revoked partition are dropped, so a later assignment restarts them from links.stats."""
    counts = LinkCounts()
    counts.add(0, "a", False)
    counts.add(1, "b", False)
    counts.drop([0])
    assert (counts.get("a"), counts.get("b")) == (None, (1, 0))
    assert [link for link, _ in counts.take_dirty()] == ["b"]
    counts.rebase({"a": (5, 0)})
    counts.add(0, "a", True)
    assert counts.get("a") == (5, 1)


def test_partition_velocity_counts_per_partition_and_forgets_revoked_ones() -> None:
    """Each partition has its own window counts; a revoked partition starts again from zero."""
    velocity = PartitionVelocity(60)
    click = raw_click(ts_ms=60_000)
    assert [velocity.of(2).hit(click) for _ in range(3)] == [1, 2, 3]
    assert velocity.of(3).hit(click) == 1
    velocity.drop([2])
    assert velocity.partitions() == {3}
    assert velocity.of(2).hit(click) == 1


def test_process_falls_back_to_the_codec_for_other_writer_schemas(stream: ClickStream) -> None:
    """A raw click framed for another reader (Confluent id, unknown here) is still refused by the codec."""
    with pytest.raises(InvalidMessage) as info:
        stream.process(b"\x00\x00\x00\x00\x07" + b"x", SRC, lambda _: None, lambda _: 0, now_ms=0)
    assert info.value.error_class == "UnknownSchemaError"


def test_visitor_secret_defaults_to_a_persisted_private_file(tmp_path: Path) -> None:
    """Without CLICKWIRE_VISITOR_SECRET a random secret is created 0600 once and reused."""
    first = EnricherSettings.from_env({"CLICKWIRE_HOME": str(tmp_path)})
    again = EnricherSettings.from_env({"CLICKWIRE_HOME": str(tmp_path)})
    path = tmp_path / "secrets" / "visitor"
    assert first.chain.visitor_secret == again.chain.visitor_secret == path.read_text().strip().encode()
    assert path.stat().st_mode & 0o777 == 0o600
    assert persisted_secret(tmp_path / "other") != path.read_text().strip()
    assert first.app_id == "clickwire-enricher"
    assert first.metrics_port == 9101


def test_enrich_command_writes_enriched_json_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    """`clickwire enrich` enriches each JSON line, joins --links, and reports bad lines on stderr."""
    settings = EnricherSettings.from_env({"CLICKWIRE_HOME": str(tmp_path)})
    ua_bot = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
    lines = [orjson.dumps(raw_click()).decode(), "{not json", orjson.dumps({"click_id": "x"}).decode(),
             orjson.dumps(raw_click(user_agent=ua_bot, click_id="c2")).decode()]
    out, err = io.StringIO(), io.StringIO()
    bad = enrich_lines(settings, io.StringIO("\n".join(lines) + "\n"), out, err,
                       links_file=io.StringIO(orjson.dumps(LINK).decode() + "\n"))
    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert bad == 2
    assert [r["click_id"] for r in records] == ["0190f0c8-0000-7000-8000-000000000001", "c2"]
    assert records[0]["campaign"] == "c1"
    assert records[1]["bot_kind"] == "link_preview"
    assert "line 2: json_error" in err.getvalue()
    assert "line 3:" in err.getvalue()
