"""Deciding who owns an alias from the claims read back (ClaimBook.decide), without a broker."""

from __future__ import annotations

from clickwire.codec import codec_for
from clickwire.settings import CommonSettings
from clickwire.topics import Topic
from services.api.claims import ClaimBook

NOW = 1_800_000_000_000
GRACE_S = 30.0


def _book(table: dict[str, str], deleted: set[str]) -> ClaimBook:
    return ClaimBook(CommonSettings.from_env({}), None, "me", link_at=table.get,
                     deleted=deleted.__contains__, timeout_s=10, grace_s=GRACE_S)


def _add(book: ClaimBook, offset: int, link_id: str, ts_ms: int = NOW, key: str = "d/c") -> None:
    domain, code = key.split("/")
    record = {"domain": domain, "code": code, "link_id": link_id, "workspace_id": "ws", "claimant": "x",
              "ts_ms": ts_ms}
    book._add(offset, key.encode(), codec_for(Topic.LINK_CLAIMS).encode(record))


def test_first_claim_wins() -> None:
    """Of two fresh claims for one alias, the lower offset wins and the other loses."""
    book = _book({}, set())
    _add(book, 5, "L1")
    _add(book, 6, "L2")
    assert book.decide("d/c", 5, "L1", NOW) is True
    assert book.decide("d/c", 6, "L2", NOW) is False


def test_claims_on_other_aliases_do_not_interfere() -> None:
    """A claim for another domain/code never blocks this one."""
    book = _book({}, set())
    _add(book, 1, "L1", key="d/other")
    _add(book, 2, "L2")
    assert book.decide("d/c", 2, "L2", NOW) is True


def test_table_holder_wins_over_claims() -> None:
    """When the links table holds the alias, only that link's claim is the owner."""
    book = _book({"d/c": "L2"}, set())
    _add(book, 1, "L1")
    _add(book, 2, "L2")
    assert book.decide("d/c", 2, "L2", NOW) is True
    assert book.decide("d/c", 1, "L1", NOW) is False


def test_deleted_or_abandoned_claims_free_the_alias() -> None:
    """An earlier claim whose link was deleted, or that never published within the grace period, does not block."""
    book = _book({}, {"L1"})
    _add(book, 1, "L1")
    _add(book, 2, "L2")
    assert book.decide("d/c", 2, "L2", NOW) is True
    stale = _book({}, set())
    _add(stale, 1, "L1", ts_ms=NOW - int(GRACE_S * 1000) - 1)
    _add(stale, 2, "L2")
    assert stale.decide("d/c", 2, "L2", NOW) is True
    fresh = _book({}, set())
    _add(fresh, 1, "L1", ts_ms=NOW - int(GRACE_S * 1000) + 1000)
    _add(fresh, 2, "L2")
    assert fresh.decide("d/c", 2, "L2", NOW) is False


def test_a_losing_claim_does_not_block_later_ones_once_the_holder_publishes() -> None:
    """After the winner's link is on the table, a third claim loses to it, not to the earlier loser."""
    book = _book({"d/c": "L1"}, set())
    for offset, link in ((1, "L1"), (2, "L2"), (3, "L3")):
        _add(book, offset, link)
    assert [book.decide("d/c", o, link, NOW) for o, link in ((1, "L1"), (2, "L2"), (3, "L3"))] == [True, False, False]
