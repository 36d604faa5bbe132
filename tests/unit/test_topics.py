"""The topics file: every logical topic declared, configuration topics compacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickwire.schemas import load_schema
from clickwire.topics import Topic, load_specs, name


def test_every_topic_is_declared_with_a_schema() -> None:
    """Each logical topic has a declaration whose Avro schema exists."""
    specs = load_specs()
    assert set(specs) == set(Topic)
    for spec in specs.values():
        assert spec.partitions >= 1
        load_schema(spec.schema)


@pytest.mark.parametrize("topic", [Topic.LINKS, Topic.WEBHOOK_SUBSCRIPTIONS, Topic.LINK_STATS])
def test_configuration_topics_are_compacted(topic: Topic) -> None:
    """Links, subscriptions and link stats keep the latest value per key forever."""
    spec = load_specs()[topic]
    assert spec.cleanup_policy == "compact"
    assert spec.configs()["cleanup.policy"] == "compact"


def test_event_topics_expire() -> None:
    """Click topics are deleted after their retention, not kept forever."""
    for topic in (Topic.CLICKS_RAW, Topic.CLICKS_ENRICHED, Topic.WEBHOOK_OUTBOX):
        spec = load_specs()[topic]
        assert spec.cleanup_policy == "delete"
        assert spec.retention_ms > 0


def test_prefix_changes_the_physical_name() -> None:
    """A prefix gives a test topics of its own."""
    assert name(Topic.CLICKS_RAW) == "clicks.raw"
    assert name(Topic.CLICKS_RAW, "t1.") == "t1.clicks.raw"


def test_malformed_file_names_the_topic(tmp_path: Path) -> None:
    """A declaration missing a field is reported with the topic's key."""
    bad = tmp_path / "topics.toml"
    bad.write_text('[topics.clicks_raw]\nname = "x"\n')
    with pytest.raises(ValueError, match="clicks_raw"):
        load_specs.__wrapped__(bad)
