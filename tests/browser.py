"""Real-browser helpers for tests: Debian's chromium driven by Playwright for Python.

Needs ``pip install playwright==1.65.2`` and ``apt-get install chromium`` (``/usr/bin/chromium``); Playwright's
own browser download (``playwright install``) is not used. Tests should skip when ``browser_available()``
is false::

    pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)

    with launch_browser() as browser:
        page = browser.new_page()
        blocked = block_network(page)
        page.goto(path.as_uri())
        ...
        assert blocked == []
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Iterator
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")

BROWSER_MISSING_REASON = (
    f"real-browser test needs Playwright (pip install playwright==1.65.2) and chromium at {CHROMIUM} "
    "(apt-get install chromium)"
)

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def browser_available() -> bool:
    """True when Playwright is importable and the chromium executable exists."""
    return importlib.util.find_spec("playwright") is not None and os.access(CHROMIUM, os.X_OK)


@contextlib.contextmanager
def launch_browser(timeout_s: float = 60.0) -> Iterator["playwright.sync_api.Browser"]:  # noqa: F821
    """Launch headless chromium with ``CHROMIUM_ARGS``; yield a Playwright ``Browser``.

    Every launch gets a fresh temporary profile: Playwright itself adds
    ``--user-data-dir=<tmp>/playwright_chromiumdev_profile-XXXXXX`` and deletes it on close (it refuses a
    ``--user-data-dir`` in ``args``; that is only for ``launch_persistent_context``, which yields no ``Browser``).
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_ARGS),
            timeout=timeout_s * 1000,
        )
        try:
            yield browser
        finally:
            browser.close()


def block_network(page, allow_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> list[str]:
    """Abort every request from ``page`` whose host is not in ``allow_hosts``.

    ``file:``, ``data:``, ``blob:`` and ``about:`` URLs (no host, nothing leaves the machine) are allowed.
    Returns the list to which each blocked URL is appended, so a test can assert it stayed empty.
    """
    blocked: list[str] = []
    allowed = {h.lower() for h in allow_hosts}

    def handle(route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("file", "data", "blob", "about") or (parts.hostname or "").lower() in allowed:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("blockedbyclient")

    page.route("**/*", handle)
    return blocked
