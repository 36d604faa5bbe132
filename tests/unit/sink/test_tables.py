"""Per-topic row mapping: decoding, validation, tombstones, and how batches are cut and named."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from aiokafka import TopicPartition

from clickwire.codec import codec_for
from clickwire.links import Link, RoutingRule, RuleCondition
from clickwire.settings import SettingsError
from clickwire.topics import Topic, name
from services.sink.settings import SinkSettings, SqlClientSettings
from services.sink.tables import MAPPINGS, InvalidRecord, LinkTombstone
from services.sink.writer import BatchWriter
from tests.integration.sink.helpers import enriched_click

CLICKS = MAPPINGS[Topic.CLICKS_ENRICHED]
LINKS = MAPPINGS[Topic.LINKS]


def test_enriched_click_maps_to_a_row_with_every_field() -> None:
    """A decoded enriched click becomes a clicks row under the Avro field names."""
    click = enriched_click("w", 1)
    row = CLICKS.to_row(b"l1", codec_for(Topic.CLICKS_ENRICHED).encode(click), 0)
    assert row == click
    assert CLICKS.table == "clickwire.clicks"


@pytest.mark.parametrize(("field", "value"), [("trust_score", 101), ("asn", -1), ("status", 70000),
                                              ("ts_ms", 20_000_000_000_000), ("click_id", "")])
def test_out_of_range_clicks_are_invalid(field: str, value: object) -> None:
    """A value the table cannot hold makes the record invalid instead of failing the whole batch."""
    payload = codec_for(Topic.CLICKS_ENRICHED).encode(enriched_click("w", 1, **{field: value}))
    with pytest.raises(InvalidRecord) as caught:
        CLICKS.to_row(b"k", payload, 0)
    assert caught.value.error_class in {"out_of_range", "missing_click_id"}


def test_undecodable_and_null_values_are_invalid() -> None:
    """Garbage bytes are 'undecodable' and a null value on a non-compacted topic is 'null_value'."""
    with pytest.raises(InvalidRecord) as garbage:
        CLICKS.to_row(b"k", b"\x00\x01garbage", 0)
    assert garbage.value.error_class == "undecodable"
    with pytest.raises(InvalidRecord) as null:
        CLICKS.to_row(b"k", None, 0)
    assert null.value.error_class == "null_value"


def test_link_rows_keep_rules_as_json_and_tombstones_carry_their_key() -> None:
    """A link's routing rules become JSON text with deleted=0; a tombstone keeps domain, code and time."""
    link = Link(id="L1", workspace_id="w", domain="clk.test", code="abc", destination="https://a.test/",
                created_ms=1, updated_ms=2,
                rules=(RoutingRule((RuleCondition("country", "in", ("DE",)),), "https://de.test/"),))
    row = LINKS.to_row(link.key.encode(), codec_for(Topic.LINKS).encode(link.to_avro()), 0)
    assert isinstance(row, dict)
    assert orjson.loads(row["rules"]) == link.to_avro()["rules"]
    assert row["deleted"] == 0
    assert LINKS.to_row(b"clk.test/abc", None, 99) == LinkTombstone("clk.test", "abc", 99)
    with pytest.raises(InvalidRecord):
        LINKS.to_row(b"no-slash", None, 99)


def test_every_sink_topic_has_a_table() -> None:
    """The sink writes exactly the four topics its issue names."""
    assert {m.table for m in MAPPINGS.values()} == {
        "clickwire.clicks", "clickwire.links", "clickwire.webhook_attempts", "clickwire.dead_letters"}


def test_batches_are_cut_at_exactly_batch_max_records_and_named_by_offsets() -> None:
    """Records of one partition are cut every batch_max records, invalid ones kept inside the offset range."""
    settings = replace(SinkSettings.from_env({}), batch_max=3)
    writer = BatchWriter(settings, store=None)  # type: ignore[arg-type]
    tp = TopicPartition(name(Topic.CLICKS_ENRICHED), 2)
    codec = codec_for(Topic.CLICKS_ENRICHED)
    for offset in range(10, 17):
        value = b"bad" if offset == 11 else codec.encode(enriched_click("w", offset))
        writer._add(tp, offset, b"k", value, 0)
    batches = writer._batches[tp]
    assert [b.token for b in batches] == [
        "clicks.enriched:2:10-12", "clicks.enriched:2:13-15", "clicks.enriched:2:16-16"]
    assert len(batches[0].items) == 2
    assert [bad.offset for bad in batches[0].invalid] == [11]


def test_settings_have_defaults_and_fail_with_the_variable_name() -> None:
    """Every sink setting has a default, and a bad value names its variable."""
    settings = SinkSettings.from_env({})
    assert (settings.port, settings.batch_max, settings.flush_ms, settings.group_id) == (9102, 5000, 500,
                                                                                          "clickwire-sink")
    assert settings.fail_writes_file is None
    assert SqlClientSettings.from_env({}).sink_url == "http://127.0.0.1:9102"
    with pytest.raises(SettingsError, match="CLICKWIRE_SINK_BATCH_MAX"):
        SinkSettings.from_env({"CLICKWIRE_SINK_BATCH_MAX": "0"})
    with pytest.raises(SettingsError, match="CLICKWIRE_SINK_URL"):
        SqlClientSettings.from_env({"CLICKWIRE_SINK_URL": "ftp://x"})
