"""Links follow the compacted topic live: two redirector processes both see a create, update and delete within 1 s."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from clickwire.settings import CommonSettings
from tests.integration.redirector.conftest import DOMAIN, Redirector, make_link, poll, put_links, start_redirector

pytestmark = pytest.mark.kafka


def _location(r: Redirector, code: str) -> str | int:
    resp = httpx.get(f"{r.url}/{code}", headers={"host": DOMAIN})
    return resp.headers.get("location") or resp.status_code


async def _seen_by_both(rs: list[Redirector], code: str, want: str | int) -> float:
    started = time.monotonic()
    ok = await poll(lambda: all(_location(r, code) == want for r in rs), 3.0, 0.01)
    assert ok, [(_location(r, code)) for r in rs]
    return time.monotonic() - started


async def test_create_update_delete_reach_two_processes_within_1s(topics: CommonSettings, tmp_path: Path,
                                                                   redirectors: list[Redirector]) -> None:
    """A link created, updated, then deleted is served, changed, then 404 by both processes within 1 s each."""
    seed = make_link("seed")
    await put_links(topics, seed)
    for i in range(2):
        redirectors.append(start_redirector(topics, tmp_path / f"home{i}"))
    link = make_link("live1", "https://example.com/v1")
    await put_links(topics, link)
    created = await _seen_by_both(redirectors, "live1", "https://example.com/v1")
    await put_links(topics, replace(link, destination="https://example.com/v2", updated_ms=link.updated_ms + 1))
    updated = await _seen_by_both(redirectors, "live1", "https://example.com/v2")
    await put_links(topics, delete=(link.key,))
    deleted = await _seen_by_both(redirectors, "live1", 404)
    assert max(created, updated, deleted) < 1.0, (created, updated, deleted)
