"""`clickwire simulate --pattern failing-destination`: a site that is healthy, then answers 503."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

import clickwire.cli.demo  # noqa: F401 - registers `simulate` on the app
from clickwire.cli import app
from clickwire.simulate import FailingDestination


async def test_the_site_answers_200_until_its_healthy_time_is_up_then_503() -> None:
    site = FailingDestination(healthy_s=0.3)
    async with TestClient(TestServer(site.app())) as client:
        site.started = time.monotonic()
        assert (await client.get("/")).status == 200
        assert (await client.head("/any/path")).status == 200
        deadline = time.monotonic() + 5
        while (await client.get("/")).status != 503:
            assert time.monotonic() < deadline, "the site never started failing"
            await asyncio.sleep(0.05)
        assert (await client.head("/")).status == 503
    assert site.answers[200] >= 2
    assert site.answers[503] >= 2


def test_click_patterns_need_links() -> None:
    result = CliRunner().invoke(app, ["simulate", "--pattern", "steady"])
    assert result.exit_code != 0
    assert "name at least one link" in result.output
