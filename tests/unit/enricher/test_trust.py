"""Trust scoring from data/signals.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.enricher.trust import HUMAN, SignalBook


@pytest.fixture(scope="module")
def book() -> SignalBook:
    return SignalBook.load()


def test_no_signal_is_a_full_trust_human(book: SignalBook) -> None:
    """Nothing fired: trust 100, not a bot, kind none."""
    assert book.score([]) == HUMAN


def test_score_is_100_minus_weights_and_weak_signals_stay_human(book: SignalBook) -> None:
    """A cloud ASN alone lowers trust by its weight without making a bot."""
    v = book.score(["asn_cloud"])
    assert v.trust_score == 100 - book.signals["asn_cloud"].weight
    assert (v.is_bot, v.bot_kind, v.trust_signals) == (False, "none", ("asn_cloud",))


def test_score_clamps_at_zero_and_heaviest_kind_wins(book: SignalBook) -> None:
    """Many strong signals clamp to 0; the heaviest kinded signal (search engine) names the kind."""
    v = book.score(["ua_crawlerdetect", "ua_search_engine", "ua_parser_spider"])
    assert (v.trust_score, v.is_bot, v.bot_kind) == (0, True, "search_engine")


def test_bot_without_kinded_signal_gets_fallback_kind(book: SignalBook) -> None:
    """Bots whose signals imply no kind get policy.fallback_kind."""
    v = book.score(["prefetch", "asn_cloud"])
    assert v.is_bot
    assert v.bot_kind == book.policy.fallback_kind


def test_duplicate_signals_count_once(book: SignalBook) -> None:
    """Firing a signal twice does not double its weight."""
    assert book.score(["asn_cloud", "asn_cloud"]) == book.score(["asn_cloud"])


def test_unknown_signal_name_is_an_error(book: SignalBook) -> None:
    """Scoring a name that signals.toml does not define raises."""
    with pytest.raises(KeyError):
        book.score(["no_such_signal"])


def test_every_signal_documents_its_source(book: SignalBook) -> None:
    """Each signal in the shipped file has a non-empty source."""
    assert book.signals
    assert all(s.source for s in book.signals.values())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[signal.x]\nweight = 10\nkind = "alien"\nsource = "s"\n', "unknown kind"),
        ('[signal.x]\nweight = -1\nsource = "s"\n', "non-negative"),
        ("[signal.x]\nweight = 10\n", "no source"),
    ],
)
def test_invalid_signal_files_are_rejected(tmp_path: Path, body: str, message: str) -> None:
    """Unknown kinds, negative weights and missing sources fail at load time."""
    path = tmp_path / "signals.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        SignalBook.load(path)
