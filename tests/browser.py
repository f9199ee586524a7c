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


def address(page) -> str:
    """The tab's URL as the browser has it (``location.href``). Playwright's ``page.url`` can keep the URL the page
    loaded with after the app's ``history.replaceState`` (``_state.url_keeper``): seen under load, a second tab's
    ``page.url`` held the first tab's session id 30 s after its address bar had its own."""
    return page.evaluate("location.href")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_app(root, env_extra: dict, log_path, start_timeout_s: float = 60.0,
                  address: str = "127.0.0.1") -> Iterator[str]:
    """Run ``streamlit run app.py`` from ``root`` on a free localhost port; yield its URL; stop it on exit.
    ``address`` is the one it listens on (``0.0.0.0``: every interface, as a server for a class); the URL is
    localhost's either way.

    ``env_extra`` is added to this process's environment (test model, zoo folder...); the server runs offline
    (``HF_HUB_OFFLINE``), on one thread, with the file watcher off. Its output goes to ``log_path``, whose tail
    is shown when it does not start.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    import pytest

    port = free_port()
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"})
    env.update(env_extra)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + start_timeout_s
        started = False
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        started = True
                        break
            except OSError:
                time.sleep(0.5)
        if not started:
            proc.kill()
            pytest.fail("streamlit did not start:\n" + open(log_path).read()[-3000:])
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def open_app_page(browser, viewport: dict, timeout_ms: int = 90_000,
                  allow_hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), **kwargs):
    """A new page on ``browser`` with every request off ``allow_hosts`` blocked and page errors collected.

    Returns ``(page, blocked, errors)``: the lists of blocked URLs and JavaScript errors, for the test to assert
    empty at the end.
    """
    page = browser.new_page(viewport=viewport, **kwargs)
    blocked = block_network(page, allow_hosts)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(timeout_ms)
    return page, blocked, errors


def lan_address() -> str | None:
    """This machine's address on its network (not loopback), or None when it has none: the route a datagram
    socket would take (``connect`` sends nothing)."""
    import socket

    for probe in ("192.0.2.1", "10.255.255.255"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                ip = s.getsockname()[0]
        except OSError:
            continue
        if ip and not ip.startswith("127.") and ip != "0.0.0.0":
            return ip
    return None


RUNNING = '[data-testid="stStatusWidget"], [data-testid="stSpinner"], [data-testid="stSkeleton"]'
"""What the app shows while a script run is in progress: the status widget, a spinner, a skeleton."""


def wait_until_idle(page, timeout_s: float = 90.0, settle_s: float = 0.7) -> None:
    """Wait until the app has content and no run is in progress for ``settle_s`` seconds (a click while the
    app still runs can be lost)."""
    import time

    page.wait_for_selector('[data-testid="stMainBlockContainer"] [data-testid="stVerticalBlock"]',
                           timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    quiet_since = None
    busy = page.locator(RUNNING)  # one query a look (three had taken ~50 ms a look under load)
    while time.time() < deadline:
        running = busy.count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= settle_s:
            return
        time.sleep(0.2)
    raise AssertionError("the app kept running")


def download(page, button: str, tries: int = 3, timeout_s: float = 40.0):
    """Click the download button named ``button`` and return the ``Download``. A click that lands while the app
    reruns can be lost (seen in full CI runs, never alone); a user would click again, and so does this, after the
    app is idle, at most ``tries`` times. A button that never downloads still fails."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        wait_until_idle(page)
        try:
            with page.expect_download(timeout=timeout_s * 1000) as info:
                page.get_by_role("button", name=button).first.click()
            return info.value
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def click_until(page, button: str, sign, tries: int = 3, timeout_s: float = 30.0) -> None:
    """Click the button named ``button`` until the locator ``sign`` shows (a job's Cancel button, say). A click
    that lands while the app reruns can be lost (seen in full CI runs, never alone: a training never started and
    the test waited out its 240 s); a user would click again, and so does this, after the app is idle, at most
    ``tries`` times. A button that never does what it should still fails."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        wait_until_idle(page)
        page.get_by_role("button", name=button).first.click()
        try:
            sign.wait_for(timeout=timeout_s * 1000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def tour_to_flip(page, url: str, timeout_s: float = 120.0) -> dict:
    """Open the guided tour at ``url`` and walk it as a presenter does: step 1 (the zoo's clean model) must say
    "Same prediction", then Next twice to step 3 (BadNets 2% + TAL), where the trigger must flip the prediction.
    Returns the seconds from opening the page to each step's verdict on screen, and the step captions naming the
    model (``{"step1_s", "flip_s", "step1_model", "step3_model"}``)."""
    import time

    t0 = time.perf_counter()
    page.goto(f"{url}/tour")
    main = page.locator('[data-testid="stMainBlockContainer"]')
    main.get_by_text("Same prediction with and without the trigger.").wait_for(timeout=timeout_s * 1000)
    step1_s = time.perf_counter() - t0
    step1_model = main.get_by_text("Model in this step:").first.inner_text()
    for n in (2, 3):  # one click per finished rerun: a click while the app still runs can be lost
        wait_until_idle(page, timeout_s)
        main.get_by_role("button", name="Next").click()
        main.get_by_text(f"Step {n}", exact=True).wait_for(timeout=timeout_s * 1000)
    main.get_by_text("The trigger flipped the prediction.").wait_for(timeout=timeout_s * 1000)
    flip_s = time.perf_counter() - t0
    step3_model = main.get_by_text("Model in this step:").first.inner_text()
    return {"step1_s": step1_s, "flip_s": flip_s, "step1_model": step1_model, "step3_model": step3_model}


def charts_drawn(locator, minimum: int, timeout_s: float = 60.0) -> None:
    """At least ``minimum`` plotly charts drew inside ``locator`` (charts render one after another, so wait for the
    count, not only the first)."""
    import time

    locator.locator(".js-plotly-plot svg.main-svg").first.wait_for(timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    drawn = locator.locator(".js-plotly-plot:has(svg.main-svg)")
    while drawn.count() < minimum and time.time() < deadline:
        time.sleep(0.5)
    n = drawn.count()
    assert n >= minimum, f"{n} charts drawn, expected {minimum}"
    # not blank: every chart drew marks (bars, heatmap cells or points)
    marks = locator.locator(".js-plotly-plot .point, .js-plotly-plot .hm, .js-plotly-plot image, "
                            ".js-plotly-plot .bars path").count()
    assert marks > 0, "charts drew nothing"
