"""Device parsing: ua-parser results, device types on a real-traffic corpus, and client hints."""

from __future__ import annotations

import pytest

from services.enricher.device import DEVICE_TYPES, ch_brand, parse_device
from tests.unit.enricher.conftest import load_browser_rows

WIN_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
ANDROID_REDUCED = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)


def test_desktop_chrome_is_parsed() -> None:
    """Chrome on Windows gives browser, versions, OS and desktop."""
    d = parse_device(WIN_CHROME)
    assert (d.browser, d.browser_version, d.os, d.os_version, d.device_type) == (
        "Chrome",
        "124.0.0",
        "Windows",
        "10",
        "desktop",
    )


@pytest.mark.parametrize("corpus", ["browser_user_agents_sample.jsonl", "browser_user_agents_holdout.jsonl"])
def test_device_type_agrees_with_external_labels(corpus: str) -> None:
    """On fake-useragent's real-traffic UAs, device_type matches the corpus label for >= 97%."""
    rows = load_browser_rows(corpus)
    agree = sum(parse_device(r["ua"]).device_type == r["type"] for r in rows)
    assert agree / len(rows) >= 0.97


def test_every_answer_is_a_known_device_type() -> None:
    """device_type is always one of the documented values, even for junk."""
    for ua in ["", "x", "curl/8.0", WIN_CHROME, "Mozilla/5.0 (PlayStation 5 3.21) AppleWebKit/605.1.15"]:
        assert parse_device(ua).device_type in DEVICE_TYPES


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)", "console"),
        (
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/538.1 (KHTML, like Gecko) "
            "Version/6.0 TV Safari/538.1",
            "tv",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Mobile/15E148 Safari/604.1",
            "tablet",
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0 Safari/537.36",
            "tablet",
        ),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
    ],
)
def test_device_type_special_cases(ua: str, expected: str) -> None:
    """Consoles, TVs, tablets and spiders get their own device_type."""
    assert parse_device(ua).device_type == expected


def test_platform_hint_overrides_frozen_ua_platform() -> None:
    """Sec-CH-UA-Platform "macOS" replaces the OS a (spoofed/frozen) UA string claims."""
    d = parse_device(WIN_CHROME, None, "?0", '"macOS"')
    assert (d.os, d.os_version) == ("Mac OS X", "")


def test_mobile_hint_marks_a_phone_and_zero_marks_an_android_tablet() -> None:
    """Sec-CH-UA-Mobile ?1 means mobile; ?0 on an Android UA that looks mobile means tablet."""
    assert parse_device(WIN_CHROME, None, "?1", None).device_type == "mobile"
    assert parse_device(ANDROID_REDUCED, None, "?0", '"Android"').device_type == "tablet"


def test_brand_hint_fills_a_missing_browser() -> None:
    """With an unparseable UA, the Sec-CH-UA brand list names the browser, skipping GREASE and Chromium."""
    ch = '"Chromium";v="124", "Microsoft Edge";v="124", "Not-A.Brand";v="99"'
    d = parse_device("", ch, "?0", '"Windows"')
    assert (d.browser, d.browser_version, d.os, d.device_type) == ("Edge", "124", "Windows", "desktop")


def test_ch_brand_without_real_brands_is_none() -> None:
    """A brand list with only GREASE entries names nothing."""
    assert ch_brand('"Not A(Brand";v="8"') is None
    assert ch_brand('"Chromium";v="124"') == ("Chromium", "124")


def test_results_are_cached_per_ua_and_hints() -> None:
    """The same (ua, hints) returns the very same object; different hints do not share it."""
    a = parse_device(WIN_CHROME, None, "?0", '"Windows"')
    assert parse_device(WIN_CHROME, None, "?0", '"Windows"') is a
    assert parse_device(WIN_CHROME, None, "?1", '"Windows"') is not a
