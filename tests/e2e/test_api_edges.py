"""The API's edges on a real `sheaf up`: requests aiohttp refuses before the application
(over-long lines, too many headers) answered in the JSON error envelope without echoing
what was sent, and the interactive API page at /docs working offline in Chromium."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.e2e.conftest import Proc
from tests.e2e.console_support import Console, browser_fixture, expect, sheaf_up  # noqa: F401

if TYPE_CHECKING:
    from playwright.async_api import Browser, Route

pytestmark = pytest.mark.e2e

SECRET = "sk_sheaf_0123456789abcdef_" + "s" * 43


async def raw(url: str, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are (no client would send these) and read the whole answer."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


async def test_requests_refused_before_the_app_answer_in_json_without_echo(
    tmp_path: Path, procs: list[Proc]
) -> None:
    url = await sheaf_up(tmp_path, procs, SHEAF_AUTH_MODE="keys", SHEAF_WORKERS="0")
    cases = {
        "request_too_large": b"GET /v1/stats?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "request_too_large ": (
            b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + SECRET.encode() * 120
            + b"\r\n\r\n"
        ),
        "bad_request": b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-Many-%d: v\r\n" % i for i in range(200))
        + b"\r\n",
    }
    for code, request in cases.items():
        status, headers, body = await raw(url, request)
        assert status.split()[1] == "400", (code, status)
        assert headers["content-type"].startswith("application/json"), headers
        error = json.loads(body)["error"]
        assert error["code"] == code.strip()
        assert error["message"]
        assert b"aaaa" not in body
        assert SECRET.encode() not in body
        assert b"X-Many" not in body
    log = (tmp_path / "up.log").read_text()
    assert "malformed request refused" in log
    assert SECRET not in log  # the header was never logged either
    assert "aaaaaaaa" not in log

    # The API still answers normal requests, with the documented 401 for no key.
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/stats") as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthenticated"


async def test_the_api_page_is_interactive_and_fetches_nothing_from_elsewhere(
    browser: Browser, tmp_path: Path, procs: list[Proc]
) -> None:
    url = await sheaf_up(tmp_path, procs, SHEAF_WORKERS="0")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    elsewhere: list[str] = []

    async def only_here(route: Route) -> None:
        if route.request.url.startswith(url):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_here)
    ui = Console(page, url, "api-page")
    async with aiohttp.ClientSession() as http, http.get(f"{url}/docs/index.html") as response:
        assert response.status == 200
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    await page.goto(f"{url}/docs")
    assert page.url == f"{url}/docs/index.html"
    await expect(page.get_by_role("heading", name="Sheaf")).to_be_visible()
    dashboard = page.locator("#operations-default-dashboard")
    await expect(dashboard).to_contain_text("/v1/admin/dashboard")
    await expect(page.locator(".authorize")).to_have_count(0)  # auth is off: nothing to give

    # Try one operation for real, from the page: GET /healthz answers 200.
    health = page.locator("#operations-default-healthz")
    await health.locator(".opblock-summary").click()
    await health.get_by_role("button", name="Execute").click()
    live = health.locator(".live-responses-table tbody .response-col_status")
    await expect(live).to_have_text("200")
    await ui.shot("api-page-tried-healthz")
    assert elsewhere == []
    assert not ui.errors, ui.errors
    await context.close()
