"""The redirector's in-memory link table: lookups, replacement, deletion and memory per link."""

from __future__ import annotations

import gc
import random
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import replace

from clickwire.codes import new_code
from clickwire.links import Link, RoutingRule, RuleCondition
from services.redirector.table import LinkTable

LINK = Link(
    id="0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    workspace_id="ws-1",
    domain="clw.io",
    code="spring",
    destination="https://shop.example.com/sale?x=1",
    created_ms=1,
    updated_ms=1,
    utm_source="newsletter",
    utm_campaign="spring",
)


def test_lookup_returns_hot_fields_with_utm_applied() -> None:
    """A stored link comes back with its ids, redirect type, policy and the utm-merged destination."""
    table = LinkTable()
    table.upsert(replace(LINK, redirect_type=308, bot_policy="preview", blocked=True))
    hot = table.lookup("clw.io", "spring")
    assert hot is not None
    assert hot.link_id == LINK.id
    assert hot.workspace_id == "ws-1"
    assert hot.destination == "https://shop.example.com/sale?x=1&utm_source=newsletter&utm_campaign=spring"
    assert (hot.redirect_type, hot.bot_policy, hot.blocked) == (308, "preview", True)
    assert (hot.expires_ms, hot.max_clicks, hot.rules) == (None, None, ())


def test_lookup_is_keyed_by_domain_and_code() -> None:
    """The same code on another domain, or another case, is a different link."""
    table = LinkTable()
    table.upsert(LINK)
    assert table.lookup("other.io", "spring") is None
    assert table.lookup("clw.io", "Spring") is None
    assert ("clw.io", "spring") in table


def test_rare_fields_round_trip_through_the_side_table() -> None:
    """Expiry, cap, rules (utm applied), preview texts, expired_url and non-UUID ids survive storage."""
    rule = RoutingRule((RuleCondition("os", "eq", ("ios",)),), "https://apps.example.com/app")
    link = replace(
        LINK,
        id="link_42",
        expires_ms=1_800_000_000_000,
        expired_url="https://shop.example.com/over",
        max_clicks=10,
        rules=(rule,),
        preview_title="T",
        preview_description="D",
        preview_image="https://shop.example.com/i.png",
    )
    table = LinkTable()
    table.upsert(link)
    hot = table.lookup("clw.io", "spring")
    assert hot is not None
    assert hot.link_id == "link_42"
    assert (hot.expires_ms, hot.max_clicks, hot.expired_url) == (1_800_000_000_000, 10, link.expired_url)
    assert (
        hot.rules[0].destination == "https://apps.example.com/app?utm_source=newsletter&utm_campaign=spring"
    )
    assert (hot.preview_title, hot.preview_description, hot.preview_image) == ("T", "D", link.preview_image)


def test_fragment_destinations_keep_utm_before_the_fragment() -> None:
    """A destination with a fragment is stored whole, utm params before '#'."""
    table = LinkTable()
    table.upsert(replace(LINK, destination="https://a.example.com/p#top"))
    hot = table.lookup("clw.io", "spring")
    assert hot is not None
    assert hot.destination == "https://a.example.com/p?utm_source=newsletter&utm_campaign=spring#top"


def test_upsert_replaces_and_remove_forgets() -> None:
    """A newer version replaces the old one without growing the table; remove() deletes it once."""
    table = LinkTable()
    table.upsert(LINK)
    table.upsert(replace(LINK, destination="https://new.example.com/", max_clicks=3))
    hot = table.lookup("clw.io", "spring")
    assert hot is not None
    assert hot.destination.startswith("https://new.example.com/?")
    assert len(table) == 1
    assert table.remove("clw.io", "spring")
    assert not table.remove("clw.io", "spring")
    assert table.lookup("clw.io", "spring") is None
    assert len(table) == 0


def test_interned_strings_are_released_with_their_last_link() -> None:
    """Removing every link frees the interned workspace, origin and utm pools (replays do not leak)."""
    table = LinkTable()
    for i in range(50):
        table.upsert(
            replace(LINK, code=f"c{i}", workspace_id=f"ws-{i % 5}", destination=f"https://s{i}.example.com/")
        )
    for i in range(50):
        table.remove("clw.io", f"c{i}")
    assert (len(table._workspaces), len(table._origins), len(table._tails)) == (0, 0, 0)
    assert table._extras == {}


def _links(n: int, rng: random.Random) -> Iterator[Link]:
    sites = [f"https://www.site{i}.example.com" for i in range(n // 20)]
    for i in range(n):
        utm = {"utm_source": "newsletter", "utm_campaign": f"c{i % 50}"} if i % 2 else {}
        yield Link(
            id=str(uuid.UUID(int=rng.getrandbits(128))),
            workspace_id=f"ws-{i % 200}",
            domain="clw.io",
            code=new_code(),
            destination=f"{rng.choice(sites)}/products/item-{rng.randint(1, 10**6)}/details?ref=home",
            created_ms=1,
            updated_ms=1,
            expires_ms=1_900_000_000_000 if i % 10 == 0 else None,
            **utm,  # type: ignore[arg-type]
        )


def test_memory_per_link_stays_under_250_bytes() -> None:
    """10k realistic links cost at most 250 bytes each (bench/link_memory.py measures 1M)."""
    rng = random.Random(1)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        table = LinkTable()
        for link in _links(10_000, rng):
            table.upsert(link)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table) == 10_000
    per_link = (after - before) / len(table)
    print(f"{per_link:.1f} bytes/link")
    assert per_link <= 250
