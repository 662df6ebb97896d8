"""The dashboard at ``/`` of the admin listener, in a real headless browser (chromium).

Each test runs a real relayd (in this process) and a test hub speaking the wire protocol,
and reads what the page shows while things happen; see tests/browser.py for how a trio
test drives the browser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from relayd.edge.daemon import Relayd
from tests.browser import PHONE, Browser, require_browser
from tests.conftest import start_edge
from tests.helpers import TestHub, post

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def edge(nursery: trio.Nursery, tmp_path: Path) -> Relayd:
    """A running relayd that keeps a quiet test hub: the page takes a poll or two (2 s each)
    to show each step, and the test hub sends no heartbeats, only acks."""
    return await start_edge(nursery, tmp_path, stale_timeout=120)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    require_browser()
    async with Browser.launch(tmp_path / "chromium-profile") as b:
        yield b


class Dashboard:
    """One tab showing relayd's dashboard, with the checks the tests make on it."""

    def __init__(self, browser: Browser, page: Any) -> None:
        self.browser = browser
        self.page = page
        self.errors: list[str] = []  # uncaught exceptions and console errors of the page

    @classmethod
    async def open(cls, browser: Browser, edge: Relayd, **options: Any) -> Dashboard:
        dashboard = cls(browser, await browser.new_page(**options))
        page = dashboard.page

        async def listen_and_go() -> None:
            page.on("pageerror", lambda error: dashboard.errors.append(str(error)))
            page.on("console", lambda message: message.type == "error"
                    and dashboard.errors.append(message.text))
            await page.goto(f"http://{edge.addresses.admin}/")

        await browser.run(listen_and_go)
        return dashboard

    async def expect(self, selector: str, *, text: str | None = None,
                     contains: str | None = None, visible: bool | None = None,
                     count: int | None = None) -> None:
        """Wait until the element shows ``text`` (exactly), or ``contains`` it, or is
        visible (or hidden), or until ``count`` elements match."""
        from playwright.async_api import expect

        async def check() -> None:
            target = expect(self.page.locator(selector))
            if text is not None:
                await target.to_have_text(text)
            if contains is not None:
                await target.to_contain_text(contains)
            if visible is True:
                await target.to_be_visible()
            if visible is False:
                await target.to_be_hidden()
            if count is not None:
                await target.to_have_count(count)

        await self.browser.run(check)

    async def click(self, selector: str) -> None:
        await self.browser.run(lambda: self.page.locator(selector).click())

    async def fill(self, selector: str, value: str) -> None:
        await self.browser.run(lambda: self.page.locator(selector).fill(value))

    async def select(self, selector: str, value: str) -> None:
        await self.browser.run(lambda: self.page.select_option(selector, value))

    async def evaluate(self, script: str) -> Any:
        return await self.browser.run(lambda: self.page.evaluate(script))

    async def screenshot(self, path: Path) -> None:
        """What the screen shows now (kept with the test's files, for a person to look at)."""
        await self.browser.run(lambda: self.page.screenshot(path=str(path)))


def row(webhook_id: str, cell: str = "") -> str:
    """The selector of a webhook's row in the list (or of one cell of it)."""
    return f'#webhooks tr[data-id="{webhook_id}"]' + (f" td.{cell}" if cell else "")


def endpoint(endpoint_id: str, cell: str) -> str:
    return f'#endpoints tr[data-id="{endpoint_id}"] .{cell}'


async def test_dashboard_follows_the_hub_and_a_webhook_through_failure_and_replay(
    edge: Relayd, browser: Browser
) -> None:
    dash = await Dashboard.open(browser, edge)
    await dash.expect("#hub-state", text="disconnected")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        await dash.expect("#hub-state", text="connected")
        await dash.expect("#hub-details", contains="home from 127.0.0.1:")

        body = b'{"event": "push", "n": 1}'
        wid = (await post(edge.addresses.ingress, "alpha", body,
                          headers={"Content-Type": "application/json", "X-Event": "push"})
               ).json()["id"]
        sent = await hub.recv_webhook()
        assert sent.id == wid
        # sent, not acknowledged yet
        await dash.expect(row(wid, "status"), text="in flight")
        await dash.expect(row(wid, "endpoint"), text="alpha")
        await dash.expect('#queue [data-key="in_flight"] .n', text="1")

        await hub.ack(wid, success=False, status_code=410, error="gone", permanent=True)
        await dash.expect(row(wid, "status"), text="failed")
        await dash.expect(row(wid, "result"), text="410 gone")
        await dash.expect(endpoint("alpha", "last_error"), contains="410 gone")
        await dash.expect('#queue [data-key="failed"] .n', text="1")

        # the detail view: headers, the body pretty-printed, the error
        await dash.click(row(wid))
        await dash.expect("#detail", visible=True)
        await dash.expect("#detail-title", text=f"Webhook {wid}")
        await dash.expect("#detail-status", text="failed")
        await dash.expect("#detail-headers", contains="x-event")
        await dash.expect("#detail-body", text=json.dumps(json.loads(body), indent=2))
        await dash.expect("#detail-facts", contains="gone")

        # Replay: a copy (a new id, the same request) is queued and reaches the hub
        await dash.click("#replay")
        await dash.expect("#action-result", contains="Replayed as ")
        copy = await hub.recv_webhook()
        assert copy.id != wid and copy.payload == body
        await dash.expect("#action-result", text=f"Replayed as {copy.id}.")
        await dash.expect(row(copy.id, "status"), contains="in flight")
        await dash.expect(row(copy.id, "status"), contains="replay")
        await hub.ack(copy.id)
        await dash.expect(row(copy.id, "status"), contains="delivered")
        await dash.expect(endpoint("alpha", "last_delivered"), contains="ago")

        # Retry: the failed original is sent again, as itself
        await dash.expect("#retry", visible=True)
        await dash.click("#retry")
        again = await hub.recv_webhook()
        assert again.id == wid
        await dash.expect("#detail-status", text="in flight")
        await dash.click("#detail-close")
        await dash.expect("#detail", visible=False)
    await dash.expect("#hub-state", text="disconnected")
    assert dash.errors == []


async def test_retry_failed_on_an_endpoint_sends_its_failed_webhooks_again(
    edge: Relayd, browser: Browser
) -> None:
    ids = [(await post(edge.addresses.ingress, "alpha", str(n).encode())).json()["id"]
           for n in range(2)]
    dash = await Dashboard.open(browser, edge)
    retry = endpoint("alpha", "controls button")
    async with TestHub.connected(edge.addresses.grpc) as hub:
        for wid in ids:
            assert (await hub.recv_webhook()).id == wid
            await hub.ack(wid, success=False, status_code=410, error="gone", permanent=True)
        await dash.expect(endpoint("alpha", "failed"), text="2")
        await dash.click(retry)
        await dash.expect("#endpoints-notice", text="alpha: 2 webhooks queued again")
        await dash.expect(endpoint("alpha", "failed"), text="0")
        for wid in ids:  # in their order, one at a time (the endpoint's window)
            assert (await hub.recv_webhook()).id == wid
            await hub.ack(wid)
        await dash.expect('#queue [data-key="delivered"] .n', text="2")
        assert await dash.evaluate(
            f"document.querySelector('{retry}').disabled")  # nothing failed left
    assert dash.errors == []


async def test_dashboard_filters_by_endpoint_and_status(edge: Relayd, browser: Browser) -> None:
    alpha = (await post(edge.addresses.ingress, "alpha")).json()["id"]
    beta = (await post(edge.addresses.ingress, "beta")).json()["id"]
    dash = await Dashboard.open(browser, edge)
    await dash.expect(row(alpha), visible=True)
    await dash.expect(row(beta), visible=True)
    await dash.select("#filter-endpoint", "beta")
    await dash.expect(row(alpha), visible=False)
    await dash.expect(row(beta), visible=True)
    await dash.select("#filter-status", "failed")
    await dash.expect(row(beta), visible=False)
    await dash.expect("#webhooks-empty", visible=True)
    # the filters are in the URL: a reload keeps them
    assert (await dash.evaluate("location.hash")) == "#endpoint=beta&status=failed"
    assert dash.errors == []


async def test_dashboard_shows_older_webhooks_on_request_and_keeps_them_all_live(
    edge: Relayd, browser: Browser
) -> None:
    ids = [(await post(edge.addresses.ingress, "alpha")).json()["id"] for _ in range(51)]
    dash = await Dashboard.open(browser, edge)
    await dash.expect("#webhooks tbody tr", count=50)  # the newest 50
    await dash.expect(row(ids[0]), visible=False)
    await dash.click("#more")
    await dash.expect("#webhooks tbody tr", count=51)
    await dash.expect(row(ids[0]), visible=True)
    await dash.expect("#more", visible=False)  # nothing older
    # a new webhook arrives on top; the oldest shown stays shown (and up to date)
    newest = (await post(edge.addresses.ingress, "alpha")).json()["id"]
    await dash.expect(row(newest), visible=True)
    await dash.expect("#webhooks tbody tr", count=52)
    for older in ids[:2]:  # ids[1] is no longer among the newest 50: still shown
        await dash.expect(row(older), visible=True)
    assert dash.errors == []


async def test_dashboard_shows_strangers_markup_as_text(edge: Relayd, browser: Browser) -> None:
    markup = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    wid = (await post(edge.addresses.ingress, "alpha", markup.encode(),
                      headers={"X-Note": markup})).json()["id"]
    dash = await Dashboard.open(browser, edge)
    await dash.click(row(wid))
    await dash.expect("#detail-body", text=markup)
    await dash.expect("#detail-headers", contains=markup)
    injected = "document.querySelectorAll('#detail img, #detail script').length"
    assert await dash.evaluate(injected) == 0
    assert await dash.evaluate("window.pwned === undefined")
    assert dash.errors == []


async def test_dashboard_asks_for_the_admin_token_once_per_tab(
    nursery: trio.Nursery, tmp_path: Path, browser: Browser
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    edge = await start_edge(nursery, tmp_path, admin={"token_file": str(token_file)})
    dash = await Dashboard.open(browser, edge)
    await dash.expect("#token-dialog", visible=True)
    await dash.fill("#token-input", "not-the-token-but-long-enough")
    await dash.click("#token-form button")
    await dash.expect("#token-error", text="That token was refused.")
    await dash.fill("#token-input", TOKEN)
    await dash.click("#token-form button")
    await dash.expect("#token-dialog", visible=False)
    await dash.expect("#hub-state", text="disconnected")
    # kept for the tab: a reload asks no more
    await dash.browser.run(dash.page.reload)
    await dash.expect("#hub-state", text="disconnected")
    await dash.expect("#token-dialog", visible=False)
    # the refused attempt was logged by the browser as a failed request; nothing else
    assert all("401" in error for error in dash.errors), dash.errors


async def test_dashboard_fits_a_phone_screen(edge: Relayd, browser: Browser,
                                             tmp_path: Path) -> None:
    wid = (await post(edge.addresses.ingress, "alpha", b'{"a": "' + b"x" * 300 + b'"}',
                      headers={"X-Long": "y" * 300})).json()["id"]
    async with TestHub.connected(edge.addresses.grpc) as hub:
        await hub.recv_webhook()
        await hub.ack(wid, success=False, status_code=500, error="e" * 200, permanent=True)
        dash = await Dashboard.open(browser, edge, viewport=PHONE)
        await dash.expect(row(wid, "status"), text="failed")
        # nothing wider than the screen: no sideways scrolling
        assert await dash.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await dash.click(row(wid))
        await dash.expect("#detail-body", contains="xxx")
        assert await dash.evaluate(
            "document.getElementById('detail').scrollWidth") <= PHONE["width"]
        await dash.screenshot(tmp_path / "phone.png")
    assert dash.errors == []


async def test_page_is_served_without_token_with_a_strict_policy(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    edge = await start_edge(nursery, tmp_path, admin={"token_file": str(token_file)})
    async with httpx.AsyncClient(base_url=f"http://{edge.addresses.admin}") as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        for path, media in (("/static/app.js", "text/javascript"),
                            ("/static/style.css", "text/css")):
            asset = await client.get(path)
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(media)
            again = await client.get(path, headers={"If-None-Match": asset.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        assert (await client.get("/static/index.html")).status_code == 404
        assert (await client.get("/api/status")).status_code == 401


def test_wheel_ships_the_dashboard_files(tmp_path: Path) -> None:
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    source = tmp_path / "src"
    shutil.copytree(ROOT / "relayd", source / "relayd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("relayd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "app.js", "style.css"):
        assert f"relayd/edge/admin/static/{name}" in names
