"""The link side of the join: the links topic materialized and indexed by link id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clickwire.codec import codec_for
from clickwire.follow import TopicTable
from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from services.enricher.chain import LinkInfo


def link_info(record: Mapping[str, Any]) -> LinkInfo:
    """The fields of a link record (link.avsc) the enricher joins onto clicks."""
    return LinkInfo(
        workspace_id=str(record.get("workspace_id") or ""),
        tags=tuple(record.get("tags") or ()),
        campaign=record.get("campaign"),
        utm_source=record.get("utm_source"),
        utm_medium=record.get("utm_medium"),
        utm_campaign=record.get("utm_campaign"),
        utm_term=record.get("utm_term"),
        utm_content=record.get("utm_content"),
        created_ms=record.get("created_ms"),
    )


class LinkIndex:
    """Link id -> LinkInfo, fed by a TopicTable keyed domain/code (or by hand in tests and `enrich`)."""

    def __init__(self) -> None:
        self._by_id: dict[str, LinkInfo] = {}
        # domain/code -> link id, so a tombstone (which carries no value) can drop the right id.
        self._id_of_key: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, link_id: str) -> LinkInfo | None:
        """The joined fields of a link, or None when the link is unknown (yet)."""
        return self._by_id.get(link_id)

    def apply(self, key: str, record: Mapping[str, Any] | None) -> None:
        """Apply one links-topic record: a new version of a link, or a tombstone (None)."""
        old_id = self._id_of_key.pop(key, None)
        if old_id is not None:
            self._by_id.pop(old_id, None)
        if record is not None:
            link_id = str(record["id"])
            self._id_of_key[key] = link_id
            self._by_id[link_id] = link_info(record)

    def on_change(self, key: str, _old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """TopicTable callback."""
        self.apply(key, new)

    def follow(self, common: CommonSettings) -> TopicTable[dict[str, Any]]:
        """A TopicTable on the links topic that keeps this index current (not started)."""
        codec = codec_for(Topic.LINKS, common.schema_registry_url)
        return TopicTable(common, Topic.LINKS, codec.decode, on_change=self.on_change)
