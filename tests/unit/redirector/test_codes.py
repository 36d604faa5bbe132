"""Short codes: randomness, length choice and alias validation."""

from __future__ import annotations

import pytest

from clickwire.codes import ALPHABET, DEFAULT_CODE_LENGTH, collision_probability, new_code, valid_code


def test_new_codes_are_base62_of_default_length_and_distinct() -> None:
    """Random codes use only base62 characters, have the default length and do not repeat."""
    codes = {new_code() for _ in range(2_000)}
    assert len(codes) == 2_000
    assert all(len(c) == DEFAULT_CODE_LENGTH and set(c) <= set(ALPHABET) for c in codes)


def test_new_codes_use_the_whole_alphabet() -> None:
    """Every base62 character shows up across many codes (no truncated alphabet)."""
    seen = set("".join(new_code() for _ in range(500)))
    assert seen == set(ALPHABET)


def test_default_length_keeps_a_billion_links_collision_free() -> None:
    """The birthday bound at 1e9 links is below 1e-3 for the default length, and 8 chars would not do."""
    assert collision_probability(10**9) < 1e-3
    assert collision_probability(10**9, length=8) > 0.99
    assert collision_probability(10**9, length=DEFAULT_CODE_LENGTH - 1) > 1e-3


@pytest.mark.parametrize("code", ["a", "Spring-Sale_2025", "x" * 64, "0", "A-b_C"])
def test_valid_aliases_are_accepted(code: str) -> None:
    """Letters, digits, '-' and '_' up to 64 characters are valid aliases."""
    assert valid_code(code)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "x" * 65,
        "..",
        "../admin",
        "a/b",
        "a%2Fb",
        "%2e%2e",
        "a.b",
        "a b",
        "tab\there",
        "nl\n",
        "nul\x00",
        "del\x7f",
        "caf\u00e9",
        "\uff41",  # full-width a: looks ASCII, is not
        "a\u200bb",  # zero-width space
        "a?b",
        "a#b",
        "a\\b",
        "healthz",
        "Metrics",
    ],
)
def test_invalid_aliases_are_refused(code: str) -> None:
    """Empty, too long, path tricks, escapes, control or non-ASCII characters and reserved names fail."""
    assert not valid_code(code)
