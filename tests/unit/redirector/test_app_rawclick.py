"""The hand-written RawClick encoder is byte-identical to fastavro's; client IPs and hosts are parsed strictly."""

from __future__ import annotations

import ipaddress

import pytest

from clickwire.codec import codec_for
from clickwire.schemas import schema_json
from clickwire.topics import Topic
from services.redirector import rawclick
from services.redirector.app import normalize_host
from services.redirector.rawclick import client_ip

CODEC = codec_for(Topic.CLICKS_RAW)

FULL: rawclick.RawClick = (
    "01923b6e-7f7a-7cc0-8a4e-3f0f9d2b1a11", 1_732_000_000_123, "2f1c5f0e-8d0a-4c37-9c1b-0e5a4c1d2e3f", "ws_1",
    "go.example", "promo", "GET", "203.0.113.9", "Mozilla/5.0 " + "x" * 200, "https://ref.example/é",
    "de-DE", "prefetch", '"Chromium";v="130"', "?0", '"Linux"', "qr=1&a=" + "b" * 70, True, 302,
    "https://example.com/landing?utm_source=news", "host-1",
)
EMPTY: rawclick.RawClick = ("id", 0, "", "", "d", "c", "HEAD", "::1", "", None, None, None, None, None, None,
                            "", False, 404, None, "r")


@pytest.mark.parametrize("click", [FULL, EMPTY, (*FULL[:1], -5, *FULL[2:])])
def test_encoder_matches_fastavro(click: rawclick.RawClick) -> None:
    """Every field, null branches, long strings and negative longs encode exactly as fastavro does."""
    assert rawclick.encode(CODEC.header, click) == CODEC.encode(rawclick.as_dict(click))


def test_encoded_click_decodes() -> None:
    """A click encoded here decodes with the topic's codec to the same values."""
    assert CODEC.decode(rawclick.encode(CODEC.header, FULL)) == rawclick.as_dict(FULL)


def test_fields_follow_the_schema_order() -> None:
    """FIELDS is the schema's field order (the encoder relies on it)."""
    schema = schema_json("raw_click")
    assert isinstance(schema, dict)
    assert tuple(f["name"] for f in schema["fields"]) == rawclick.FIELDS


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("peer", "xff", "fwd", "want"),
    [
        ("198.51.100.7", "1.2.3.4", None, "198.51.100.7"),  # untrusted peer: headers ignored
        ("10.0.0.5", "1.2.3.4", None, "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.9", None, "1.2.3.4"),  # spoofed left-most entry ignored
        ("10.0.0.5", None, 'for="[2001:db8::1]:4711";proto=https', "2001:db8::1"),
        ("10.0.0.5", "garbage", None, "10.0.0.5"),
    ],
)
def test_client_ip(peer: str, xff: str | None, fwd: str | None, want: str) -> None:
    """X-Forwarded-For/Forwarded are believed only from a trusted proxy, and only up to the first untrusted hop."""
    assert client_ip(peer, xff, fwd, TRUSTED) == want


@pytest.mark.parametrize(
    ("raw", "want"),
    [("Go.Example:8080", "go.example"), ("go.example.", "go.example"), ("[::1]:80", "[::1]"),
     ("bad host", None), ("", None), ("x" * 300, None), ("évil.example", None)],
)
def test_normalize_host(raw: str, want: str | None) -> None:
    """Hosts are lower-cased without port or trailing dot; anything that is not a hostname is None."""
    assert normalize_host(raw) == want


CAPTURED: list[rawclick.Captured] = [
    (b"id-1", 1_732_000_000_123, "L1", "ws_1", "go.example", "promo", "GET", "203.0.113.9", "Mozilla/5.0",
     "https://ref.example/é", "de-DE", "prefetch", '"Chromium";v="130"', "?0", '"Linux"', "qr=1&a=b", 302,
     "https://example.com/landing?utm_source=news", None, None),
    # Same millisecond and link, other request fields: the cached runs must not leak between clicks.
    (b"id-2", 1_732_000_000_123, "L1", "ws_1", "go.example", "promo", "HEAD", "2001:db8::1", "", None, None,
     None, None, None, None, "", 302, "https://example.com/landing?utm_source=news", None, None),
    (b"id-3", 1_732_000_000_124, "", "", "go.example", "nope", "GET", "10.0.0.5", "x" * 300, None, None, None,
     None, None, None, "qr=10", 404, None, "1.2.3.4", None),
    (b"id-4", 1_732_000_000_124, "L2", "ws_2", "b.example", "promo", "GET", "10.0.0.5", "ua", None, None, None,
     None, None, None, "", 301, "https://b.example/", "1.2.3.4", None),
]


def test_finisher_encode_matches_finish_then_fastavro() -> None:
    """Finisher.encode (cached runs, inlined nulls) writes exactly what fastavro writes for the finished click."""
    finisher = rawclick.Finisher("host-1", TRUSTED, CODEC.header)
    for captured in CAPTURED * 2:
        finished = finisher(captured)
        assert finisher.encode(captured) == CODEC.encode(rawclick.as_dict(finished))
    assert finisher(CAPTURED[3])[7] == "1.2.3.4"  # behind a trusted proxy: the forwarded client
