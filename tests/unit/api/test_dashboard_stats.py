"""The dashboard's per-workspace aggregates (services/api/dashboard_stats.py), without a broker."""

from __future__ import annotations

from typing import Any

from services.api import dashboard_stats as stats
from services.api.dashboard_stats import OTHER, WINDOW_S, Board

NOW_S = 1_800_000_000


def _click(ws: str = "ws", sec: int = NOW_S, code: str = "a", bot: str | None = None,
           country: str = "DE", campaign: str | None = "spring") -> dict[str, Any]:
    return {"click_id": f"c{sec}{code}", "ts_ms": sec * 1000 + 5, "workspace_id": ws, "domain": "d", "code": code,
            "campaign": campaign, "country": country, "is_bot": bot is not None, "bot_kind": bot or "none",
            "trust_score": 10 if bot else 100}


def _attempt(sub: str, ts_ms: int, outcome: str = "success", status: int = 200) -> dict[str, Any]:
    return {"subscription_id": sub, "ts_ms": ts_ms, "outcome": outcome, "status": status, "latency_ms": 12.34}


def test_totals_count_humans_bots_links_campaigns_and_countries_of_one_workspace_only() -> None:
    """Totals add up per workspace; orphan clicks (no workspace) count nowhere."""
    board = Board()
    board.add_clicks([_click(), _click(code="b", bot="crawler", country="US", campaign=None),
                      _click(ws="other"), _click(ws="")], NOW_S)
    totals = board.snapshot("ws", NOW_S * 1000)["totals"]
    assert (totals["clicks"], totals["humans"], totals["bots"]) == (2, 1, 1)
    assert totals["bot_kinds"] == {"crawler": 1}
    assert dict(totals["links"]) == {"d/a": 1, "d/b": 1}
    assert dict(totals["campaigns"]) == {"spring": 1, stats.NO_CAMPAIGN: 1}
    assert dict(totals["countries"]) == {"DE": 1, "US": 1}
    assert set(board.workspaces) == {"ws", "other"}


def test_buckets_leave_the_window_and_take_their_counts_with_them() -> None:
    """Pruning drops expired seconds from both the chart buckets and the totals."""
    board = Board()
    board.add_clicks([_click(sec=NOW_S - 100), _click(sec=NOW_S, bot="link_preview")], NOW_S)
    ws = board.workspaces["ws"]
    assert ws.prune(NOW_S) is False
    assert ws.prune(NOW_S - 100 + WINDOW_S) is True
    totals = board.snapshot("ws", 0)["totals"]
    assert (totals["clicks"], totals["humans"], dict(totals["countries"])) == (1, 0, {"DE": 1})
    assert [b["t"] for b in board.snapshot("ws", 0)["buckets"]] == [NOW_S]


def test_clicks_older_than_the_window_are_listed_but_not_charted() -> None:
    """A late click shows in the latest list but not in the window's totals."""
    board = Board()
    board.add_clicks([_click(sec=NOW_S - WINDOW_S - 5)], NOW_S)
    snap = board.snapshot("ws", 0)
    assert (snap["totals"]["clicks"], len(snap["latest"]), snap["buckets"]) == (0, 1, [])


def test_a_bucket_holds_a_bounded_number_of_links(monkeypatch: Any) -> None:
    """Past MAX_KEYS distinct links in one second, the rest count as OTHER, in buckets and totals alike."""
    monkeypatch.setattr(stats, "MAX_KEYS", 3)
    board = Board()
    board.add_clicks([_click(code=str(i)) for i in range(5)], NOW_S)
    snap = board.snapshot("ws", 0)
    assert snap["buckets"][0]["links"] == {"d/0": 1, "d/1": 1, "d/2": 1, OTHER: 2}
    assert dict(snap["totals"]["links"]) == {"d/0": 1, "d/1": 1, "d/2": 1, OTHER: 2}
    board.workspaces["ws"].prune(NOW_S + WINDOW_S)
    assert board.snapshot("ws", 0)["totals"]["links"] == []


def test_updates_carry_only_what_a_viewer_has_not_seen() -> None:
    """An update after version/seq holds the touched buckets and the new clicks only."""
    board = Board()
    board.add_clicks([_click(sec=NOW_S - 10), _click(sec=NOW_S)], NOW_S)
    snap = board.snapshot("ws", 0)
    board.add_clicks([_click(sec=NOW_S, code="z")], NOW_S)
    update = board.update("ws", snap["version"], snap["latest"][-1]["seq"], 0)
    assert [b["t"] for b in update["buckets"]] == [NOW_S]
    assert [row["link"] for row in update["latest"]] == ["d/z"]
    assert update["totals"]["clicks"] == 3


def test_latest_keeps_fifty_and_workspaces_are_bounded(monkeypatch: Any) -> None:
    """The latest list is capped, and an idle workspace is dropped first past MAX_WORKSPACES."""
    monkeypatch.setattr(stats, "MAX_WORKSPACES", 2)
    board = Board()
    board.add_clicks([_click(code=str(i)) for i in range(60)], NOW_S)
    assert len(board.snapshot("ws", 0)["latest"]) == stats.LATEST
    board.workspace("watched").viewers = 1
    board.workspace("third")
    board.workspace("fourth")
    assert "watched" in board.workspaces
    assert len(board.workspaces) == 2


def test_delivery_health_counts_the_window_and_follows_subscription_ownership() -> None:
    """Successes and failures over the window, the last attempt, and only the workspace's subscriptions."""
    board = Board()
    board.set_subscription("s1", {"workspace_id": "ws", "url": "https://h/1", "description": "crm"})
    board.set_subscription("s2", {"workspace_id": "other", "url": "https://h/2"})
    now_ms = NOW_S * 1000
    touched = board.add_attempts([_attempt("s1", now_ms - 700_000), _attempt("s1", now_ms - 60_000),
                                  _attempt("s1", now_ms - 1000, "retry", 503), _attempt("s2", now_ms)])
    assert touched == {"ws", "other"}
    [health] = board.webhooks("ws", now_ms)
    assert (health["successes"], health["failures"]) == (1, 1), "the attempt 700 s ago is outside the window"
    assert (health["last_status"], health["last_outcome"], health["last_latency_ms"]) == (503, "retry", 12.3)
    assert board.set_subscription("s1", None) == "ws"
    assert board.webhooks("ws", now_ms) == []
