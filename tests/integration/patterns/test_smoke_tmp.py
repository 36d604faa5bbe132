"""Temporary smoke test."""
import time
import pytest
from tests.integration.patterns.conftest import Kit, click, link, summary

pytestmark = [pytest.mark.kafka]


async def test_smoke(kit: Kit) -> None:
    """Milestones at small thresholds."""
    ws = "ws_smoke"
    await kit.thresholds(ws, {"milestones": {"counts": [3, 5]}})
    t0 = time.monotonic()
    await kit.start()
    print("started", time.monotonic() - t0)
    lk = link(ws, campaign="spring", tags=("promo",))
    await kit.clicks([click(lk) for _ in range(5)])
    t1 = time.monotonic()
    events = await kit.derived(lambda es: len(es) >= 6, settle_s=1)
    print("detected", time.monotonic() - t1, summary(events))
    t2 = time.monotonic()
    await kit.stop_all()
    print("stopped", time.monotonic() - t2)
