"""Headless Chromium (Debian's ``chromium`` package) driven over the DevTools protocol, for e2e tests.

A small client on ``websockets``: launch with a fresh profile, open one page, navigate, evaluate
JavaScript, poll a condition, take a screenshot, and collect the page's uncaught errors.
``make setup`` installs the browser (Debian's ``chromium``); tests fail when it is missing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = os.environ.get("CLICKWIRE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-proxy-server", "--hide-scrollbars", "--disable-dev-shm-usage", "--remote-debugging-port=0")


def available() -> bool:
    """True when the Chromium binary is installed."""
    return shutil.which(CHROMIUM) is not None


class CdpError(Exception):
    """The browser answered a command with an error, or the page threw."""


class Page:
    """One browser tab attached over a flat DevTools session."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.session: str | None = None
        self.errors: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            fut = self._pending.pop(message.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(message)
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details.get("text", "?"))
            elif message.get("method") == "Runtime.consoleAPICalled" and message["params"]["type"] == "error":
                args = message["params"]["args"]
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in args))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> dict[str, Any]:
        """Send one command (to the page's session unless browser) and return its result."""
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if self.session is not None and not browser:
            message["sessionId"] = self.session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        await self._ws.send(json.dumps(message))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def goto(self, url: str) -> None:
        """Navigate and return once the request is sent (wait for content with :meth:`wait_for`)."""
        await self.send("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout_s: float = 15.0) -> Any:
        """Poll a JavaScript expression until it is truthy; AssertionError naming what after the deadline."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(CdpError):  # the page may be between navigations
                last = await self.evaluate(expression)
                if last:
                    return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} (last value {last!r}; page errors {self.errors})")

    async def screenshot(self, path: Path) -> None:
        """Save the whole page (not only the viewport) as a PNG."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        """Stop reading (the socket is closed by the browser's exit)."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _log_file(profile: Path) -> BinaryIO:
    profile.mkdir(parents=True, exist_ok=True)
    return (profile / "chromium.log").open("wb")


@contextlib.asynccontextmanager
async def chromium_page(profile: Path, width: int = 1400, height: int = 1000) -> AsyncIterator[Page]:
    """Launch headless Chromium with a fresh profile and yield one attached page; the browser exits after."""
    log = await asyncio.to_thread(_log_file, profile)
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank",
        stdout=log, stderr=log)
    page: Page | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start; see {profile / 'chromium.log'}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        async with connect(f"ws://127.0.0.1:{port}{path}", proxy=None, max_size=None) as ws:
            page = Page(ws)
            target = await page.send("Target.createTarget", {"url": "about:blank"})
            attached = await page.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
            page.session = attached["sessionId"]
            await page.send("Runtime.enable")
            await page.send("Page.enable")
            await page.send("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            yield page
            with contextlib.suppress(Exception):
                # It may exit before answering: bounded, then the process wait below takes over.
                await asyncio.wait_for(page.send("Browser.close", browser=True), 5)
    finally:
        if page is not None:
            await page.close()
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        log.close()
