"""The app's first minutes in a real browser (Playwright driving Debian's chromium): a fresh workspace (the demo
generated as ``python app.py`` does on its first start), empty Inspect and Compare tabs that point to the one action,
the action's estimate before it starts, the chain's progress, then a filled Compare view of No-DA, ADVENT, OURS-S1
and OURS-S2 — with the ``tiny`` preset (``PSS_QUICKSTART_PRESET=tiny``) so the chain takes about a minute.

``PSS_SCREENSHOT_WORKSPACE=<a workspace whose chain is done>`` instead saves ``assets/screenshots/quickstart_*.png``
of that workspace (the README's shots are of the real demo preset). Needs ``/usr/bin/chromium``.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser_support import SCREENSHOTS, open_page, require_chromium, stop_jobs
from inspect_support import launch
from pss.api import Workspace
from pss.api.jobs import job_service, stop_job_service
from pss.data.demo import DemoConfig
from pss_app.__main__ import prepare_workspace

pytestmark = pytest.mark.browser

TINY = DemoConfig(num_source=16, num_users=2, images_per_user=12)
CHAIN = 600_000  # ms: four job processes one after another on two busy cores
SHOTS = os.environ.get("PSS_SCREENSHOT_WORKSPACE")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "PSS_QUICKSTART_PRESET")}
    if SHOTS:
        workspace = Workspace(Path(SHOTS))
    else:
        os.environ.update(OMP_NUM_THREADS="1",  # jobs share two cores with the app, pytest and chromium
                          PSS_QUICKSTART_PRESET="tiny")
        workspace = prepare_workspace(tmp_path_factory.mktemp("quickstart-page") / "ws", config=TINY)
    yield workspace
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.update({key: value})
    if SHOTS:
        stop_job_service(workspace)  # an existing workspace: its jobs are the user's
    else:
        stop_jobs(workspace)


@pytest.fixture(scope="module")
def page(ws: Workspace) -> Iterator:
    require_chromium()
    demo, url = launch(ws, default_k=4)
    with open_page(url) as tab:
        yield tab
    demo.close()


def _text(page, selector: str) -> str:
    return page.evaluate(f"() => document.querySelector('{selector}')?.innerText || ''")


@pytest.mark.skipif(bool(SHOTS), reason="screenshots of an existing workspace only")
def test_one_action_from_a_fresh_app_to_a_filled_compare_view(page, ws: Workspace) -> None:
    # before anything ran: the banner offers the action with its measured estimate; the tabs point to it
    page.wait_for_function("() => (document.querySelector('#quickstart-text')?.innerText || '').includes('New here')")
    button = page.locator("#quickstart-start")
    assert re.search(r"Train the demo comparison \(about \d+ (s|min)\)", button.inner_text()), button.inner_text()
    offer = _text(page, "#quickstart-text")
    assert "No-DA, ADVENT, OURS-S1 and OURS-S2" in offer and "Estimated" in offer and "measured" in offer
    page.get_by_role("tab", name="Compare").click()
    page.wait_for_function("() => (document.querySelector('#compare-empty')?.innerText || '')"
                           ".includes('Train the demo comparison')")
    page.get_by_role("tab", name="Inspect").click()
    page.wait_for_function("() => (document.querySelector('#inspect-empty')?.innerText || '')"
                           ".includes('Train the demo comparison')")

    # the one action: the chain goes to the job queue, the banner follows it (its timer polls)
    button.click()
    page.wait_for_function("() => (document.querySelector('#quickstart-text')?.innerText || '').includes('Training')")
    assert page.locator("#quickstart-start").is_disabled()
    progress = _text(page, "#quickstart-progress")
    assert "waiting for its start run" in progress and "OURS-S2" in progress
    page.wait_for_function("() => (document.querySelector('#quickstart-text')?.innerText || '').includes('is ready')",
                           timeout=CHAIN)
    assert _text(page, "#quickstart-progress").count("done") == 4
    assert len(job_service(ws).store.list_runs(status="done")) == 4  # every run went through the job queue
    queue = job_service(ws).queue
    deadline = time.monotonic() + 60  # the last run is done; its process may still be exiting
    while any(job.status == "running" for job in queue.list_jobs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [job.status for job in queue.list_jobs()] == ["done"] * 4

    # Open Compare: the four runs preselected, the figure and the per-run scores of the first image
    page.click("#quickstart-compare")
    _filled_compare(page)
    # the hint goes once its refresh (an event of its own, racing the figure) answers
    page.wait_for_function("() => (document.querySelector('#compare-empty')?.innerText || '').trim() === ''")
    assert page.errors == []


def _filled_compare(page) -> None:
    page.wait_for_function("() => document.querySelectorAll('#compare-runs input[type=checkbox]:checked').length == 4")
    page.wait_for_selector("#compare-figure img")
    page.wait_for_function("""() => { const t = document.querySelector('#compare-scores')?.innerText || '';
        return ['No-DA', 'ADVENT', 'OURS-S1', 'OURS-S2'].every(label => t.includes(label)); }""")


@pytest.mark.skipif(not SHOTS, reason="set PSS_SCREENSHOT_WORKSPACE to a workspace whose chain is done")
def test_screenshots_of_a_done_chain(page, ws: Workspace) -> None:
    page.wait_for_function("() => (document.querySelector('#quickstart-text')?.innerText || '').includes('is ready')")
    page.click("#quickstart-compare")
    _filled_compare(page)
    page.screenshot(path=str(SCREENSHOTS / "quickstart_compare.png"), full_page=True)
