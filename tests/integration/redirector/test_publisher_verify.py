"""After a failed send round, spooled clicks the broker had written after all are not published again."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from clickwire.codec import codec_for
from clickwire.kafka import make_producer
from clickwire.settings import CommonSettings
from clickwire.topics import Topic, name, spec
from services.redirector import ontopic, rawclick
from services.redirector.publisher import ClickPublisher
from services.redirector.spool import Spool
from tests.integration.redirector.conftest import poll, read_clicks

pytestmark = pytest.mark.kafka


def _click(cid: str, link: str) -> rawclick.RawClick:
    return (cid, int(time.time() * 1000), link, "ws_1", "go.example", "c", "GET", "203.0.113.9", "ua",
            None, None, None, None, None, None, "", False, 302, "https://example.com/", "r1")


async def test_written_but_unacknowledged_clicks_are_not_resent(topics: CommonSettings, tmp_path: Path) -> None:
    """A round whose batches reached the topic but whose acks were lost: each click ends up on the topic once."""
    topic = name(Topic.CLICKS_RAW, topics.topic_prefix)
    header = codec_for(Topic.CLICKS_RAW, topics.schema_registry_url).header
    records = []
    for i in range(300):
        link = f"link{i % 7}"
        records.append((link.encode(), rawclick.encode(header, _click(str(uuid.uuid4()), link))))

    spool = Spool(tmp_path / "p.spool", 1 << 26)
    spool.open()
    publisher = ClickPublisher(topics, spool)
    # The state right after a failed round: marks taken before it, its records spooled and unverified.
    publisher._marks = await ontopic.end_offsets(topics, topic, range(spec(Topic.CLICKS_RAW).partitions), 10.0)
    producer = make_producer(topics)
    await producer.start()
    try:
        for key, value in records[:200]:  # the part the broker wrote before it stopped answering
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()
    for key, value in records:
        spool.append(key, value)
    await spool.flush()
    publisher._unverified = {cid for cid in
                             (ontopic.click_id_of(v, len(header)) for _, v in records) if cid}

    await publisher.start()
    try:
        assert await poll(lambda: spool.unread == 0, 30), "the spool was not replayed"
    finally:
        await publisher.stop(5.0)
        await spool.close()
    clicks = await read_clicks(topics, len(records), timeout_s=20, idle_s=1.0)
    seen = Counter(c["click_id"] for c in clicks)
    want = {ontopic.click_id_of(v, len(header)) for _, v in records}
    assert set(seen) == want
    assert max(seen.values()) == 1, f"{sum(1 for n in seen.values() if n > 1)} clicks published twice"
    assert publisher.published == 100
