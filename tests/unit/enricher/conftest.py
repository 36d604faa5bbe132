"""Shared fixtures and corpora for the enricher's unit tests (no Kafka, no ClickHouse)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.enricher.chain import Enricher, EnricherConfig

DATA = Path(__file__).with_name("data")


def load_bot_uas(name: str) -> list[str]:
    """Bot user agents from an external corpus file, one per line."""
    return [line for line in (DATA / name).read_text().splitlines() if line]


def load_browser_rows(name: str) -> list[dict[str, Any]]:
    """Browser rows (ua, percent, type, browser, os) from an external corpus file."""
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def raw_click(**overrides: Any) -> dict[str, Any]:
    """A complete raw_click record (raw_click.avsc) with overridable fields."""
    raw: dict[str, Any] = {
        "click_id": "0190f0c8-0000-7000-8000-000000000001",
        "ts_ms": 1_700_000_000_000,
        "link_id": "lnk_1",
        "workspace_id": "ws_1",
        "domain": "sho.rt",
        "code": "abc",
        "method": "GET",
        "client_ip": "81.2.69.142",
        "user_agent": (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36"
        ),
        "referer": None,
        "accept_language": "en-GB,en;q=0.9",
        "purpose": None,
        "ch_ua": None,
        "ch_ua_mobile": None,
        "ch_ua_platform": None,
        "query": "",
        "qr": False,
        "status": 302,
        "destination": "https://example.com/landing",
        "redirector_id": "redir-1",
    }
    raw.update(overrides)
    return raw


@pytest.fixture(scope="session")
def enricher() -> Enricher:
    """One Enricher for the session: loading geoip2fast data costs ~0.5 s."""
    return Enricher(EnricherConfig(visitor_secret=b"unit-test-secret-0123456789"))
