"""Referrer classification from data/referrers.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from services.enricher.referrer import DATA_FILE, ReferrerClassifier, load_rules, referrer_host


@pytest.fixture(scope="module")
def classifier() -> ReferrerClassifier:
    return ReferrerClassifier(load_rules())


@pytest.mark.parametrize(
    ("referer", "host", "klass"),
    [
        (None, "", "direct"),
        ("", "", "direct"),
        ("https://www.google.co.uk/search?q=x", "google.co.uk", "search"),
        ("https://www.google.com/", "google.com", "search"),
        ("https://gemini.google.com/app/123", "gemini.google.com", "ai_assistant"),
        ("https://chatgpt.com/c/abc", "chatgpt.com", "ai_assistant"),
        ("https://l.facebook.com/l.php?u=x", "l.facebook.com", "social"),
        ("https://t.co/abc", "t.co", "social"),
        ("https://mail.google.com/mail/u/0/", "mail.google.com", "email"),
        ("android-app://com.google.android.gm/", "com.google.android.gm", "email"),
        ("https://WWW.Example.ORG:8443/page", "example.org", "other"),
        ("https://google.evil.example.com/", "google.evil.example.com", "other"),
        ("http://[::1", "", "other"),
    ],
)
def test_referrer_classes(classifier: ReferrerClassifier, referer: str | None, host: str, klass: str) -> None:
    """Each referer gets the normalised host and the class its data-file rule implies."""
    ref = classifier.classify(referer, "sho.rt")
    assert (ref.host, ref.klass) == (host, klass)


@pytest.mark.parametrize(
    "referer",
    [
        "https://nam12.safelinks.protection.outlook.com/?url=https%3A%2F%2Fsho.rt%2Fabc",
        "https://urldefense.com/v3/__https://sho.rt/abc__;!!x",
        "https://protect-eu.mimecast.com/s/abc",
        "https://linkprotect.cudasvc.com/url?a=https%3a%2f%2fsho.rt",
    ],
)
def test_mail_rewriters_are_email_and_flagged(classifier: ReferrerClassifier, referer: str) -> None:
    """E-mail security rewriters are class email and carry the rewriter flag for the bot module."""
    ref = classifier.classify(referer, "sho.rt")
    assert (ref.klass, ref.rewriter) == ("email", True)


def test_plain_webmail_is_not_a_rewriter(classifier: ReferrerClassifier) -> None:
    """Webmail is email but not a rewriter."""
    assert classifier.classify("https://outlook.office.com/mail/", "sho.rt").rewriter is False


def test_same_host_as_link_domain_is_internal(classifier: ReferrerClassifier) -> None:
    """A referer on the link's own domain (www. ignored) is internal."""
    assert classifier.classify("https://www.sho.rt/other", "sho.rt").klass == "internal"
    assert classifier.classify("https://sho.rt/other", "").klass == "other"


def test_referrer_host_handles_ports_and_case() -> None:
    """referrer_host lower-cases and drops ports and www."""
    assert referrer_host("HTTPS://WWW.Bing.com:443/search") == "bing.com"


def test_every_rule_has_a_source_and_bad_files_are_rejected(tmp_path: Path) -> None:
    """The shipped file has a source per entry, and a file with an entry lacking one fails to load."""
    doc = tomllib.loads(DATA_FILE.read_text())
    assert all(entry.get("source") for entry in doc["host"])
    bad = tmp_path / "r.toml"
    bad.write_text('[[host]]\nhost = "x.com"\nclass = "social"\n')
    with pytest.raises(ValueError, match="no source"):
        load_rules(bad)
