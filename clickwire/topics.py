"""Logical topics and their physical names, declared once in deploy/topics.toml.

Code names a topic by its logical :class:`Topic`; the physical name comes from the file plus
``CLICKWIRE_TOPIC_PREFIX`` (tests use the prefix to get topics of their own).
"""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from clickwire.settings import REPO_ROOT

TOPICS_FILE = REPO_ROOT / "deploy" / "topics.toml"


class Topic(enum.StrEnum):
    """Every topic clickwire reads or writes, by logical name."""

    CLICKS_RAW = "clicks_raw"
    CLICKS_ENRICHED = "clicks_enriched"
    LINKS = "links"
    LINK_STATS = "link_stats"
    WEBHOOK_SUBSCRIPTIONS = "webhook_subscriptions"
    WEBHOOK_OUTBOX = "webhook_outbox"
    WEBHOOK_RETRY = "webhook_retry"
    WEBHOOK_ATTEMPTS = "webhook_attempts"
    WEBHOOK_DEAD = "webhook_dead"
    DEAD_LETTERS = "dead_letters"
    API_KEYS = "api_keys"
    LINK_CLAIMS = "link_claims"
    EVENTS_DERIVED = "events_derived"
    WORKSPACE_SETTINGS = "workspace_settings"


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is declared."""

    topic: Topic
    name: str
    schema: str
    key: str
    partitions: int
    replication_factor: int
    cleanup_policy: str
    retention_ms: int
    compression: str

    def physical(self, prefix: str = "") -> str:
        """The broker-side name of this topic under a prefix."""
        return prefix + self.name

    def configs(self) -> dict[str, str]:
        """Topic-level configs passed to CreateTopics."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "compression.type": self.compression,
        }


@cache
def load_specs(path: Path = TOPICS_FILE) -> dict[Topic, TopicSpec]:
    """Parse the topics file; raises ValueError naming the topic when it is malformed."""
    data = tomllib.loads(path.read_text())
    defaults = data.get("defaults", {})
    specs: dict[Topic, TopicSpec] = {}
    for key, entry in data["topics"].items():
        try:
            topic = Topic(key)
            merged = {**defaults, **entry}
            specs[topic] = TopicSpec(
                topic=topic,
                name=str(merged["name"]),
                schema=str(merged["schema"]),
                key=str(merged["key"]),
                partitions=int(merged["partitions"]),
                replication_factor=int(merged["replication_factor"]),
                cleanup_policy=str(merged["cleanup_policy"]),
                retention_ms=int(merged["retention_ms"]),
                compression=str(merged["compression"]),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: topic {key!r} is malformed: {exc}") from None
    missing = set(Topic) - set(specs)
    if missing:
        raise ValueError(f"{path}: topics not declared: {sorted(m.value for m in missing)}")
    return specs


def spec(topic: Topic) -> TopicSpec:
    """The declaration of one topic."""
    return load_specs()[topic]


def name(topic: Topic, prefix: str = "") -> str:
    """The physical name of a topic under a prefix."""
    return spec(topic).physical(prefix)
