"""The composed chain: contract shape, link fields, privacy settings, and throughput."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import fastavro
import pytest

from services.enricher.chain import Enricher, EnricherConfig, LinkInfo
from tests.unit.enricher.conftest import load_browser_rows, raw_click

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "avro"
T = 1_700_000_000_000


@pytest.fixture(scope="module")
def enriched_schema() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((SCHEMAS / "enriched_click.avsc").read_text()))


def test_record_has_exactly_the_contract_fields(enricher: Enricher, enriched_schema: dict[str, Any]) -> None:
    """enrich() returns every enriched_click.avsc field, nothing else (no client_ip), valid Avro."""
    link = LinkInfo(
        workspace_id="ws_1", tags=("spring",), campaign="launch", utm_source="nl", created_ms=T - 10**7
    )
    out = enricher.enrich(raw_click(referer="https://www.google.com/"), link, now_ms=T + 5)
    assert set(out) == {f["name"] for f in enriched_schema["fields"]}
    assert fastavro.validate(out, fastavro.parse_schema(enriched_schema), raise_errors=True)


def test_orphan_click_without_link_still_validates(
    enricher: Enricher, enriched_schema: dict[str, Any]
) -> None:
    """An orphan click (no link, no UA, private IP) is still a valid record with empty link fields."""
    out = enricher.enrich(
        raw_click(link_id="", workspace_id="", user_agent="", client_ip="10.0.0.1"), None, now_ms=T
    )
    assert fastavro.validate(out, fastavro.parse_schema(enriched_schema), raise_errors=True)
    assert (out["tags"], out["campaign"], out["country"], out["link_created_ms"]) == ([], None, "", None)


def test_link_and_enrichment_fields_are_filled(enricher: Enricher) -> None:
    """Link metadata, geo, device, referrer, ip mode and enriched_ms land in the record."""
    link = LinkInfo(
        workspace_id="ws_9", tags=("a", "b"), campaign="c", utm_medium="email", created_ms=T - 10**7
    )
    out = enricher.enrich(raw_click(workspace_id="", referer="https://t.co/x"), link, now_ms=T + 7)
    assert out["workspace_id"] == "ws_9"
    assert (out["tags"], out["campaign"], out["utm_medium"], out["utm_source"]) == (
        ["a", "b"],
        "c",
        "email",
        None,
    )
    assert (out["country"], out["browser"], out["device_type"]) == ("GB", "Chrome", "desktop")
    assert (out["referrer_host"], out["referrer_class"]) == ("t.co", "social")
    assert (out["ip"], out["enriched_ms"]) == ("81.2.69.0", T + 7)
    assert len(out["visitor_hash"]) == 32


def test_enrich_is_deterministic(enricher: Enricher) -> None:
    """The same inputs give the same record (safe to retry in the stream)."""
    link = LinkInfo(created_ms=T - 1)
    assert enricher.enrich(raw_click(), link, now_ms=T) == enricher.enrich(raw_click(), link, now_ms=T)


def test_config_from_env_reads_settings_and_names_missing_secret() -> None:
    """from_env reads the documented keys, rejects a bad ip mode and names a missing secret."""
    cfg = EnricherConfig.from_env({"CLICKWIRE_VISITOR_SECRET": "x" * 20, "CLICKWIRE_STORE_IP": "none"})
    assert (cfg.store_ip, cfg.geoip_mmdb) == ("none", None)
    assert "x" * 20 not in repr(cfg)
    with pytest.raises(KeyError, match="CLICKWIRE_VISITOR_SECRET"):
        EnricherConfig.from_env({})
    with pytest.raises(ValueError, match="CLICKWIRE_STORE_IP"):
        EnricherConfig.from_env({"CLICKWIRE_VISITOR_SECRET": "x" * 20, "CLICKWIRE_STORE_IP": "half"})


def test_ip_mode_none_stores_no_address() -> None:
    """CLICKWIRE_STORE_IP=none leaves ip empty but still hashes the visitor."""
    e = Enricher(EnricherConfig(visitor_secret=b"y" * 32, store_ip="none"))
    out = e.enrich(raw_click(), None, now_ms=T)
    assert (out["ip"], len(out["visitor_hash"])) == ("", 32)


def test_warm_chain_throughput_beats_the_enricher_target(enricher: Enricher) -> None:
    """With warm caches on a realistic UA/IP mix, enrich() sustains > 20,000 calls/s."""
    rows = load_browser_rows("browser_user_agents_sample.jsonl")
    uas = [r["ua"] for r in rows[:200]] + ["Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"]
    clicks = [
        raw_click(user_agent=uas[i % len(uas)], client_ip=f"81.2.{i % 50}.{i % 200}") for i in range(5_000)
    ]
    link = LinkInfo(created_ms=T - 10**6)
    for c in clicks:
        enricher.enrich(c, link, now_ms=T)
    start = time.perf_counter()
    for c in clicks:
        enricher.enrich(c, link, now_ms=T)
    rate = len(clicks) / (time.perf_counter() - start)
    assert rate > 20_000
