"""A real headless browser for trio tests: Debian's chromium driven by Playwright.

Playwright's Python API runs on asyncio; the tests run on trio. So the browser lives on an
asyncio event loop in a thread of its own, and a trio test awaits each step through
`Browser.run` (the step runs on that loop; trio waits on an Event the step's future sets).
Playwright's own waiting (``expect(...).to_have_text``) is the synchronisation: it
retries until the page shows the text or its timeout passes.

Every Playwright call, even one that looks local (``page.on`` sends a subscription to the
driver), must happen inside a step: Playwright is not thread-safe, and a message sent from
the trio thread can have its answer dispatched before its callback is registered
("Cannot find command to respond").

Playwright's bundled browser download is not used (nor reachable here): chromium is the
Debian package, which `.ci/run` installs. Without it (or without playwright) the tests
fail under ``CI=true`` and skip, saying why, elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

__all__ = ["CHROMIUM", "PHONE", "Browser", "require_browser"]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # CSS pixels of a common phone
# How long one browser step (an `expect`, a click) may take: a few polls of the page.
STEP_TIMEOUT_MS = 10_000

T = TypeVar("T")


def require_browser() -> None:
    """Skip (locally) or fail (``CI=true``) unless playwright and chromium are here."""
    problem = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        problem = "playwright is not installed (it is in the test extra: pip install -e '.[test]')"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (Debian: apt-get install chromium; .ci/run does it)"
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"the browser tests cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


class Browser:
    """One chromium (fresh profile) on its own asyncio thread; `run` a step from trio."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.context: Any = None  # playwright's BrowserContext, once started

    @classmethod
    @asynccontextmanager
    async def launch(cls, profile: Path) -> AsyncIterator[Browser]:
        """Start chromium with ``profile`` as its user-data dir; close it on leaving."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="playwright", daemon=True)
        thread.start()
        browser = cls(loop)
        playwright: Any = None
        try:
            from playwright.async_api import async_playwright

            async def start() -> Any:
                nonlocal playwright
                playwright = await async_playwright().start()
                context = await playwright.chromium.launch_persistent_context(
                    str(profile), executable_path=str(CHROMIUM), args=ARGS, headless=True,
                    viewport=DESKTOP)
                context.set_default_timeout(STEP_TIMEOUT_MS)
                return context

            browser.context = await browser.run(start)
            yield browser
        finally:
            with trio.CancelScope(shield=True):
                async def stop() -> None:
                    if browser.context is not None:
                        await browser.context.close()
                    if playwright is not None:
                        await playwright.stop()

                await browser.run(stop)
                loop.call_soon_threadsafe(loop.stop)
                await trio.to_thread.run_sync(thread.join)
                loop.close()

    async def run(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step()`` on the browser's loop and return its result (or raise its error)."""
        async def call() -> T:
            return await step()

        future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    async def new_page(self, **options: Any) -> Any:
        """A new tab (playwright ``Page``); ``options`` as `Page.set_viewport_size` etc."""
        page = await self.run(self.context.new_page)
        if "viewport" in options:
            await self.run(lambda: page.set_viewport_size(options["viewport"]))
        return page
