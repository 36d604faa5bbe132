"""Faust's internal topics of the patterns service exist, as Faust would make them, before its worker joins."""

from __future__ import annotations

import pytest

from clickwire.kafka import admin_client, check_topics, create_topics
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name
from services.patterns.app import PatternsApp
from services.patterns.cli import TOPICS
from services.patterns.settings import PatternsSettings

pytestmark = [pytest.mark.kafka]


async def test_internal_topics_are_created_and_described(topics: CommonSettings) -> None:
    # On a fresh broker Faust's first assignment could come before these were in its metadata, and its
    # assignor then skipped them for good (no derived event at all): serve() creates them first.
    settings = PatternsSettings.from_env({"CLICKWIRE_KAFKA_BOOTSTRAP": topics.bootstrap,
                                          "CLICKWIRE_TOPIC_PREFIX": topics.topic_prefix,
                                          "CLICKWIRE_HOME": str(topics.home)})
    partitions = await check_topics(topics, TOPICS)
    app = PatternsApp(settings, click_partitions=partitions[name(Topic.CLICKS_ENRICHED, topics.topic_prefix)],
                      link_partitions=partitions[name(Topic.LINKS, topics.topic_prefix)])
    wanted = app.internal_topics()
    assert any(t.name.endswith("-changelog") for t in wanted)
    assert any("entities" in t.name for t in wanted)

    await create_topics(settings.common, wanted)
    await create_topics(settings.common, wanted)  # a second worker starting: nothing to do, no error

    async with admin_client(topics) as admin:
        described = {t["topic"]: t for t in await admin.describe_topics([t.name for t in wanted])}
    for topic in wanted:
        assert described[topic.name]["error_code"] == 0, topic.name
        assert len(described[topic.name]["partitions"]) == topic.num_partitions, topic.name
        if topic.name.endswith("-changelog"):
            assert "compact" in topic.topic_configs.get("cleanup.policy", ""), topic.name
