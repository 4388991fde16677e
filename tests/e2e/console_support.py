"""Driving the web console in headless Chromium, for tests/e2e/test_console.py.

The browser is Debian's `chromium` (found on PATH), driven by Playwright's Python package
with `executable_path`: Playwright never downloads a browser of its own. axe-core comes
from `node_modules` (npm ci) and reaches the page through a route of this test's own, on
the page's origin, so the console's Content-Security-Policy (scripts from 'self' only)
stays in force while axe runs. Every step leaves a screenshot (and each accessibility
check its full axe report) under test-artifacts/console/<test>/.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import require_service
from tests.e2e.conftest import ROOT, Proc, free_port, sheaf_env, start, wait_ready

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "console"
AXE_PATH = "/__test__/axe.min.js"  # served by the test's route, never by Sheaf
BLOCKING_IMPACTS = {"serious", "critical"}
UI_TIMEOUT_MS = 60_000

try:  # a missing package skips (or, in CI, fails) through the `browser` fixture
    from playwright.async_api import expect
except ImportError:  # pragma: no cover - dev extra missing
    expect = None

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        require_service("Chromium", "Debian's chromium is not installed (apt-get install chromium)")
    assert path is not None
    return path


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    """Headless Chromium for one test; needs chromium, playwright and axe-core."""
    executable = _chromium()
    if expect is None:
        require_service("Playwright", "the playwright package is missing (pip install -e '.[dev]')")
    from playwright.async_api import async_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # what a loaded CI machine may need

    if not AXE.is_file():
        require_service("axe-core", f"{AXE.relative_to(ROOT)} is missing (run npm ci)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


async def sheaf_up(tmp_path: Path, procs: list[Proc], **settings: str) -> str:
    """`sheaf up` on a free loopback port (no auth there by default); returns its URL."""
    port = free_port()
    env = sheaf_env(**{"SHEAF_WORKERS": "1", **settings})
    proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, proc)
    return url


class Console:
    """One browser page on the console, with screenshots and axe checks per step."""

    def __init__(self, page: Page, url: str, name: str) -> None:
        self.page = page
        self.url = url
        self.dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.steps = 0
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console_message)

    def _console_message(self, message: Any) -> None:
        # Chromium logs every 4xx answer as an error; those are the API's answers, which
        # the page shows. Anything else logged as an error is a fault of the console.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    @classmethod
    async def open(cls, browser: Browser, url: str, name: str) -> Console:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        await page.route(f"**{AXE_PATH}", _serve_axe)
        console = cls(page, url, name)
        await page.goto(f"{url}/")
        await page.wait_for_selector("#screen > *")
        return console

    async def go(self, hash_route: str) -> None:
        """Navigate inside the console (a fragment route such as `#/admin`)."""
        await self.page.evaluate("route => { location.hash = route; }", hash_route)
        await self.page.wait_for_function(
            "route => location.hash === route", arg=hash_route, timeout=UI_TIMEOUT_MS
        )

    async def shot(self, step: str) -> Path:
        self.steps += 1
        path = self.dir / f"{self.steps:02d}-{step}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def check(self, step: str) -> None:
        """Screenshot, then axe: zero serious or critical violations on this screen."""
        await self.shot(step)
        violations = await self.axe()
        (self.dir / f"{self.steps:02d}-{step}.axe.json").write_text(
            json.dumps(violations, indent=2)
        )
        blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
        assert not blocking, f"axe on {step}: {json.dumps(blocking, indent=2)}"
        assert not self.errors, f"errors in the page's console: {self.errors}"

    async def axe(self) -> list[dict[str, Any]]:
        loaded = await self.page.evaluate("typeof window.axe !== 'undefined'")
        if not loaded:
            await self.page.add_script_tag(url=f"{self.url}{AXE_PATH}")
        result: list[dict[str, Any]] = await self.page.evaluate(
            """async () => {
                const report = await axe.run(document, {resultTypes: ["violations"]});
                return report.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map(n => ({target: n.target.join(" "), html: n.html})),
                }));
            }"""
        )
        return result


async def _serve_axe(route: Any) -> None:
    await route.fulfill(path=str(AXE), content_type="text/javascript")
