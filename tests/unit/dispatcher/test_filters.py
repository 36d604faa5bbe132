"""Subscription filters: the index agrees with a brute-force matcher and follows changes live."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.dispatcher.filters import EventFacts, SubscriptionIndex, matches

WORKSPACES = ["w1", "w2"]
LINKS = ["l1", "l2", "l3"]
DOMAINS = ["a.co", "b.co"]
TAGS = ["t1", "t2", "t3"]
CAMPAIGNS = ["c1", "c2"]
COUNTRIES = ["US", "DE", "FR"]
DEVICES = ["desktop", "mobile", "bot"]
REFERRERS = ["search", "direct", "email"]
BOT_KINDS = ["crawler", "link_preview", "security_scanner"]
TYPES = ["click", "link.created", "link.deleted"]


def _subset(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), max_size=2, unique=True)


@st.composite
def subscriptions(draw: st.DrawFn, sub_id: str) -> dict[str, Any]:
    """Subscriptions shaped like webhook_subscription.avsc over small value pools, so matches are common."""
    return {
        "id": sub_id,
        "workspace_id": draw(st.sampled_from(WORKSPACES)),
        "event_types": draw(_subset(TYPES)),
        "enabled": draw(st.booleans()) or draw(st.booleans()),
        "filters": {
            "link_ids": draw(_subset(LINKS)),
            "domains": draw(_subset(DOMAINS)),
            "tags": draw(_subset(TAGS)),
            "campaigns": draw(_subset(CAMPAIGNS)),
            "countries": draw(_subset(COUNTRIES)),
            "device_types": draw(_subset(DEVICES)),
            "referrer_classes": draw(_subset(REFERRERS)),
            "include_bots": draw(st.booleans()),
            "bot_kinds": draw(_subset(BOT_KINDS)),
            "min_trust": draw(st.none() | st.integers(0, 100)),
        },
    }


@st.composite
def events(draw: st.DrawFn) -> EventFacts:
    """Click and link events over the same pools."""
    etype = draw(st.sampled_from(TYPES))
    common = {
        "workspace_id": draw(st.sampled_from(WORKSPACES)),
        "domain": draw(st.sampled_from(DOMAINS)),
        "tags": draw(_subset(TAGS)),
        "campaign": draw(st.none() | st.sampled_from(CAMPAIGNS)),
    }
    if etype != "click":
        return EventFacts.from_link(etype, {"id": draw(st.sampled_from(LINKS)), **common})
    is_bot = draw(st.booleans())
    return EventFacts.from_click(
        {
            "link_id": draw(st.sampled_from(LINKS)),
            **common,
            "country": draw(st.sampled_from(COUNTRIES)),
            "device_type": draw(st.sampled_from(DEVICES)),
            "referrer_class": draw(st.sampled_from(REFERRERS)),
            "is_bot": is_bot,
            "bot_kind": draw(st.sampled_from(BOT_KINDS)) if is_bot else "none",
            "trust_score": draw(st.integers(0, 100)),
        }
    )


def brute_force(sub: dict[str, Any], e: EventFacts) -> bool:
    """The filter rules written out longhand, independent of the module under test."""
    f = sub["filters"]
    if not sub["enabled"] or sub["workspace_id"] != e.workspace_id:
        return False
    checks: list[tuple[list[str], list[Any]]] = [
        (sub["event_types"], [e.type]),
        (f["link_ids"], [e.link_id]),
        (f["domains"], [e.domain]),
        (f["tags"], list(e.tags)),
        (f["campaigns"], [e.campaign]),
    ]
    if e.is_click:
        checks += [
            (f["countries"], [e.country]),
            (f["device_types"], [e.device_type]),
            (f["referrer_classes"], [e.referrer_class]),
        ]
    for wanted, have in checks:
        if wanted and not any(h in wanted for h in have):
            return False
    if e.is_click and e.is_bot:
        if not f["include_bots"] and not f["bot_kinds"]:
            return False
        if f["bot_kinds"] and e.bot_kind not in f["bot_kinds"]:
            return False
    return not (e.is_click and f["min_trust"] is not None and e.trust_score < f["min_trust"])


@st.composite
def subscription_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 25))
    return [draw(subscriptions(f"s{i}")) for i in range(n)]


@settings(max_examples=100)
@given(subs=subscription_sets(), evs=st.lists(events(), min_size=1, max_size=5))
def test_index_agrees_with_brute_force(subs: list[dict[str, Any]], evs: list[EventFacts]) -> None:
    """For random subscriptions and events, the index returns exactly the brute-force matches."""
    index = SubscriptionIndex(subs)
    for e in evs:
        expected = sorted(s["id"] for s in subs if brute_force(s, e))
        assert index.match(e) == expected
        assert sorted(s["id"] for s in subs if s["enabled"] and matches(s, e)) == expected


@settings(max_examples=50)
@given(
    before=subscription_sets(),
    changes=st.lists(st.tuples(st.integers(0, 29), st.booleans(), st.data()), max_size=20),
    e=events(),
)
def test_index_follows_updates_and_removals(
    before: list[dict[str, Any]], changes: list[tuple[int, bool, st.DataObject]], e: EventFacts
) -> None:
    """After any sequence of upserts and tombstones the index matches a rebuild from the final state."""
    index = SubscriptionIndex(before)
    state = {s["id"]: s for s in before}
    for n, delete, data in changes:
        sub_id = f"s{n}"
        if delete:
            index.apply(sub_id, None)
            state.pop(sub_id, None)
        else:
            sub = data.draw(subscriptions(sub_id))
            index.apply(sub_id, sub)
            state[sub_id] = sub
    assert index.match(e) == sorted(i for i, s in state.items() if brute_force(s, e))
    assert len(index) == sum(1 for s in state.values() if s["enabled"])


def _click(**over: Any) -> EventFacts:
    base = {
        "workspace_id": "w1",
        "link_id": "l1",
        "domain": "A.co",
        "tags": ["t1"],
        "campaign": None,
        "country": "us",
        "device_type": "mobile",
        "referrer_class": "email",
        "is_bot": False,
        "bot_kind": "none",
        "trust_score": 80,
    }
    return EventFacts.from_click({**base, **over})


def _sub(
    sub_id: str = "s", workspace: str = "w1", types: list[str] | None = None, **filters: Any
) -> dict[str, Any]:
    return {"id": sub_id, "workspace_id": workspace, "event_types": types or [], "filters": filters}


def test_workspaces_never_cross() -> None:
    """A filterless subscription in another workspace receives nothing."""
    index = SubscriptionIndex([_sub("mine"), _sub("theirs", workspace="w2")])
    assert index.match(_click()) == ["mine"]


def test_bots_excluded_by_default_and_kinds_select() -> None:
    """Bots are dropped unless include_bots or bot_kinds; bot_kinds picks which kinds pass."""
    index = SubscriptionIndex(
        [_sub("humans"), _sub("all", include_bots=True), _sub("previews", bot_kinds=["link_preview"])]
    )
    assert index.match(_click()) == ["all", "humans", "previews"]
    assert index.match(_click(is_bot=True, bot_kind="link_preview")) == ["all", "previews"]
    assert index.match(_click(is_bot=True, bot_kind="crawler")) == ["all"]


def test_min_trust_and_case_normalisation() -> None:
    """min_trust is inclusive; country and domain filters ignore case."""
    index = SubscriptionIndex([_sub("t", min_trust=80, countries=["US"], domains=["a.CO"])])
    assert index.match(_click(trust_score=80)) == ["t"]
    assert index.match(_click(trust_score=79)) == []


def test_link_events_skip_click_only_filters() -> None:
    """A country filter does not hold back link.created, while the event type filter still applies."""
    index = SubscriptionIndex(
        [_sub("links", types=["link.created"], countries=["DE"]), _sub("clicks", types=["click"])]
    )
    link: dict[str, Any] = {"id": "l1", "workspace_id": "w1", "domain": "a.co", "tags": [], "campaign": None}
    assert index.match(EventFacts.from_link("link.created", link)) == ["links"]
    assert index.match(_click()) == ["clicks"]


def test_disabled_subscription_is_removed() -> None:
    """Upserting a subscription as disabled stops its matches; enabling it again restores them."""
    index = SubscriptionIndex([_sub("s")])
    index.upsert({**_sub("s"), "enabled": False})
    assert (index.match(_click()), len(index)) == ([], 0)
    index.upsert(_sub("s"))
    assert index.match(_click()) == ["s"]
