"""Matching cost of SubscriptionIndex with 10 versus 10,000 subscriptions, for a typical click.

Usage: python -m bench.subscription_index

Two populations: subscriptions spread over 1,000 workspaces (the common case) and all in the event's
own workspace (one large agency), each with a mix of filters (by link, by domain, by campaign, by
country and link, or none) over value spaces large enough that a typical click matches about as many
subscriptions in both sizes, so the ratio measures the index, not the output. Target: ratio <= 2.
"""

from __future__ import annotations

import random
import time
from typing import Any

from services.dispatcher.filters import EventFacts, SubscriptionIndex


def _subscription(i: int, rng: random.Random, workspaces: int) -> dict[str, Any]:
    kind = rng.choice(["link", "domain", "campaign", "country", "none"])
    filters: dict[str, Any] = {}
    if kind == "link":
        filters["link_ids"] = [f"link{rng.randrange(100_000)}"]
    elif kind == "domain":
        filters["domains"] = [f"d{rng.randrange(50_000)}.example"]
    elif kind == "campaign":
        filters["campaigns"] = [f"camp{rng.randrange(50_000)}"]
    elif kind == "country":
        filters["countries"] = [rng.choice(["US", "DE", "FR", "GB", "JP"])]
        filters["link_ids"] = [f"link{rng.randrange(100_000)}"]
    if kind == "none" and workspaces == 1:
        filters["link_ids"] = [f"link{rng.randrange(100_000)}"]  # a big workspace rarely wants every click
    return {
        "id": f"sub{i}",
        "workspace_id": f"ws{rng.randrange(workspaces)}",
        "event_types": ["click"],
        "filters": filters,
    }


def _events(rng: random.Random, n: int) -> list[EventFacts]:
    return [
        EventFacts.from_click(
            {
                "workspace_id": "ws0",
                "link_id": f"link{rng.randrange(100_000)}",
                "domain": f"d{rng.randrange(50_000)}.example",
                "tags": ["spring"],
                "campaign": f"camp{rng.randrange(50_000)}",
                "country": rng.choice(["US", "DE", "FR"]),
                "device_type": "mobile",
                "referrer_class": "social",
                "is_bot": False,
                "bot_kind": "none",
                "trust_score": 90,
            }
        )
        for _ in range(n)
    ]


def _per_match_us(index: SubscriptionIndex, events: list[EventFacts], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for e in events:
            index.match(e)
        best = min(best, time.perf_counter() - start)
    return best / len(events) * 1e6


def main() -> None:
    """Print µs per match for each population and size, and the 10,000/10 ratio."""
    rng = random.Random(1)
    events = _events(rng, 20_000)
    print(f"{'population':<24} {'10 subs µs':>11} {'10k subs µs':>12} {'ratio':>6} {'matches/event':>14}")
    for name, workspaces in (("1,000 workspaces", 1_000), ("one workspace", 1)):
        rates, found = [], []
        for n in (10, 10_000):
            # The event's workspace always holds some of the subscriptions.
            subs = [_subscription(i, rng, workspaces) for i in range(n)]
            for s in subs[:: max(1, n // 10)]:
                s["workspace_id"] = "ws0"
            index = SubscriptionIndex(subs)
            rates.append(_per_match_us(index, events))
            found.append(sum(len(index.match(e)) for e in events) / len(events))
        print(
            f"{name:<24} {rates[0]:>11.2f} {rates[1]:>12.2f} {rates[1] / rates[0]:>6.2f}"
            f" {found[0]:>6.2f} / {found[1]:.2f}"
        )


if __name__ == "__main__":
    main()
