"""What every browser test shares: Debian's chromium driven by Playwright, one page per test module.

Playwright's own browser download is not used (no network in CI); ``.ci/run`` installs chromium with apt-get.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pss.api import Workspace
from pss.api.jobs import job_service, stop_job_service
from pss.runs.procs import process_alive

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "assets" / "screenshots"  # the README's


def require_chromium() -> None:
    """Skip the calling test (fixture) when Debian's chromium is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")


@contextlib.contextmanager
def open_page(url: str, width: int = 1400, timeout_ms: int = 60_000) -> Iterator:
    """A chromium tab on ``url`` (loaded); ``tab.errors`` collects the page's JavaScript errors."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        tab = browser.new_page(viewport={"width": width, "height": 1000})
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.set_default_timeout(timeout_ms)
        tab.goto(url, wait_until="load")
        tab.errors = errors
        try:
            yield tab
        finally:
            browser.close()


def wait_text(page, selector: str, text: str) -> None:
    """Wait until the element ``selector`` shows ``text`` (in its rendered text)."""
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, text])


def pick(page, selector: str, text: str) -> None:
    """Choose the option showing ``text`` in the Gradio dropdown ``selector`` (typed, then clicked)."""
    box = page.locator(f"{selector} input")
    box.click()
    box.fill(text)
    page.get_by_role("option").filter(has_text=text).first.click()


def stop_jobs(ws: Workspace) -> None:
    """End what a test's page launched: kill the running jobs' process groups, stop the workspace's job service."""
    for job in job_service(ws, start=False).queue.list_jobs(status="running"):
        if job.pid and process_alive(job.pid, job.proc_start):
            os.killpg(job.pid, signal.SIGKILL)
    stop_job_service(ws)
