"""Link model: Avro round trip against link.avsc and utm merging."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
import pytest

from clickwire.links import Link, RoutingRule, RuleCondition, apply_utm, utm_query

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "avro" / "link.avsc"

BASE = Link(
    id="0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    workspace_id="ws-1",
    domain="clw.io",
    code="spring",
    destination="https://shop.example.com/sale",
    created_ms=1_700_000_000_000,
    updated_ms=1_700_000_000_500,
)


def _full_link() -> Link:
    return replace(
        BASE,
        redirect_type=308,
        expires_ms=1_800_000_000_000,
        expired_url="https://shop.example.com/over",
        max_clicks=500,
        tags=("spring", "email"),
        campaign="spring-sale",
        utm_source="newsletter",
        utm_medium="email",
        utm_term="shoes",
        utm_content="hero",
        rules=(
            RoutingRule(
                (RuleCondition("os", "eq", ("ios",)), RuleCondition("country", "in", ("DE", "AT"))),
                "https://apps.apple.com/app/id1",
            ),
        ),
        bot_policy="preview",
        preview_title="Sale",
        preview_description="30% off",
        preview_image="https://shop.example.com/og.png",
        destination_trust=80,
        destination_flags=("shortener",),
        blocked=True,
    )


def test_avro_round_trip_through_fastavro_keeps_every_field() -> None:
    """A fully populated Link encodes with link.avsc and decodes back equal, ms ints included."""
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    link = _full_link()
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, link.to_avro())
    buf.seek(0)
    decoded = fastavro.schemaless_reader(buf, schema, schema)
    assert isinstance(decoded, dict)
    assert Link.from_avro(decoded) == link


def test_to_avro_has_exactly_the_contract_field_names() -> None:
    """to_avro() emits exactly the fields link.avsc declares, no more, no fewer."""
    declared = {f["name"] for f in json.loads(SCHEMA.read_text())["fields"]}
    assert set(BASE.to_avro()) == declared


def test_from_avro_fills_schema_defaults() -> None:
    """A record with only required fields takes the schema's defaults."""
    minimal = {
        k: v
        for k, v in BASE.to_avro().items()
        if k in {"id", "workspace_id", "domain", "code", "destination", "created_ms", "updated_ms"}
    }
    link = Link.from_avro(minimal)
    assert (link.redirect_type, link.bot_policy, link.destination_trust, link.blocked) == (
        302,
        "redirect",
        100,
        False,
    )


def test_from_avro_accepts_datetimes_for_timestamp_millis() -> None:
    """Timestamps decoded as datetimes (fastavro's default) come back as ms ints."""
    from datetime import UTC, datetime

    record = BASE.to_avro() | {"created_ms": datetime.fromtimestamp(1_700_000_000.25, UTC)}
    assert Link.from_avro(record).created_ms == 1_700_000_000_250


@pytest.mark.parametrize(
    ("field", "value"), [("redirect_type", 303), ("bot_policy", "maybe"), ("destination_trust", 101)]
)
def test_invalid_values_are_refused(field: str, value: Any) -> None:
    """Values outside the contract's vocabulary raise instead of reaching the redirector."""
    with pytest.raises(ValueError, match=field):
        replace(BASE, **{field: value})


def test_unknown_rule_field_is_refused() -> None:
    """A routing condition on a field the redirector cannot evaluate is refused at construction."""
    with pytest.raises(ValueError, match="rule field"):
        RuleCondition("planet", "eq", ("mars",))


def test_key_is_domain_slash_code() -> None:
    """The compacted-topic key is "domain/code"."""
    assert BASE.key == "clw.io/spring"


def test_apply_utm_adds_params_in_stable_order() -> None:
    """utm params are appended with '?' to a URL without a query, in utm_source..utm_content order."""
    link = replace(BASE, utm_source="news letter", utm_medium="email", utm_campaign="q1&q2")
    assert apply_utm("https://a.example/p", link) == (
        "https://a.example/p?utm_source=news%20letter&utm_medium=email&utm_campaign=q1%26q2"
    )


def test_apply_utm_never_overwrites_existing_params() -> None:
    """A param the destination already has (even blank) keeps its value; only missing ones are added."""
    link = replace(BASE, utm_source="newsletter", utm_medium="email", utm_campaign="spring")
    url = "https://a.example/p?utm_source=partner&utm_medium=&x=%2F"
    assert apply_utm(url, link) == url + "&utm_campaign=spring"


def test_apply_utm_keeps_fragment_last_and_query_bytes_untouched() -> None:
    """Added params go before the fragment, and the existing query is not re-encoded."""
    link = replace(BASE, utm_source="s")
    assert (
        apply_utm("https://a.example/p?q=a+b%20c#top", link)
        == "https://a.example/p?q=a+b%20c&utm_source=s#top"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.example/p?", "https://a.example/p?utm_source=s"),
        ("https://a.example/p?x=1&", "https://a.example/p?x=1&utm_source=s"),
        ("https://a.example", "https://a.example?utm_source=s"),
    ],
)
def test_apply_utm_joins_without_doubling_separators(url: str, expected: str) -> None:
    """A trailing '?' or '&' is reused instead of adding another separator."""
    assert apply_utm(url, replace(BASE, utm_source="s")) == expected


def test_campaign_fills_utm_campaign_only_when_absent() -> None:
    """campaign becomes utm_campaign unless the link sets utm_campaign itself."""
    assert utm_query("https://a.example/", replace(BASE, campaign="c1")) == "utm_campaign=c1"
    assert (
        utm_query("https://a.example/", replace(BASE, campaign="c1", utm_campaign="u1")) == "utm_campaign=u1"
    )


def test_apply_utm_without_params_returns_destination_unchanged() -> None:
    """A link with no utm fields leaves the destination exactly as it was."""
    url = "https://a.example/p?x=1#f"
    assert apply_utm(url, BASE) is url
