"""Fixtures of the wallboard tests: Debian's chromium through Playwright, the app on a free port."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tooling import missing

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, ViewportSize

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"  # git-ignored: screenshots to look at
VIEWPORT: ViewportSize = {"width": 1920, "height": 1080}  # the floor TV


def require_chromium() -> str:
    """Path of Debian's chromium; skip the test without it (fail it when ``CI=true``)."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing("the playwright package is not installed: pip install -e '.[test]'")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian chromium, closed (with its Playwright driver) after the test."""
    executable = require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


OpenBoard = Callable[..., Awaitable["Page"]]


@pytest.fixture
async def open_board(browser: Browser) -> AsyncIterator[OpenBoard]:
    """``await open_board(url, setup=None)``: a 1920×1080 page on the wallboard, in the call centre's time zone.

    ``setup(page)`` runs before the page loads. Any JavaScript error on a page fails the test.
    """
    contexts: list[Any] = []
    errors: list[str] = []

    async def _open(url: str, setup: Callable[[Page], Awaitable[None]] | None = None, **options: Any) -> Page:
        context = await browser.new_context(viewport=VIEWPORT, timezone_id="Asia/Shanghai", locale="zh-CN", **options)
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{url}: {exc}"))
        if setup is not None:
            await setup(page)  # e.g. routes, before the page opens its event stream
        await page.goto(url)
        return page

    try:
        yield _open
    finally:
        for context in contexts:
            await context.close()
    assert not errors, f"JavaScript errors on the wallboard: {errors}"


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
