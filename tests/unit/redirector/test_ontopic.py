"""The publisher's read-back finds a click's id in its encoded value, and rejects what is not one."""

from __future__ import annotations

from clickwire.codec import codec_for
from clickwire.topics import Topic
from services.redirector import rawclick
from services.redirector.ontopic import click_id_of
from tests.unit.redirector.test_app_rawclick import EMPTY, FULL

CODEC = codec_for(Topic.CLICKS_RAW)


def test_click_id_of_encoded_clicks() -> None:
    """Short ids and ids longer than one varint byte come back exactly."""
    long_id = "é" * 70  # 140 bytes: a two-byte length
    for click in (FULL, EMPTY, (long_id, *FULL[1:])):
        value = rawclick.encode(CODEC.header, click)
        assert click_id_of(value, len(CODEC.header)) == click[0]


def test_click_id_of_garbage_is_none() -> None:
    """A truncated or malformed value is skipped, not raised on."""
    value = rawclick.encode(CODEC.header, FULL)
    header = len(CODEC.header)
    assert click_id_of(value[:header + 5], header) is None
    assert click_id_of(value[:header], header) is None
    assert click_id_of(CODEC.header + b"\x01", header) is None  # negative length
    assert click_id_of(CODEC.header + b"\x04\xff\xfe", header) is None  # not UTF-8
