"""The app's Runs tab in a real browser (Playwright driving Debian's chromium): launch a run from the page, watch
the step counter move while the timer polls, see it finish with metrics, open it from the history, delete it.

Saves ``assets/screenshots/runs_live.png`` and ``runs_done.png``. Needs ``/usr/bin/chromium``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from browser_support import SCREENSHOTS, open_page, require_chromium, stop_jobs
from inspect_support import launch
from pss.api import Workspace, create_demo_workspace
from pss.api.jobs import job_service
from pss.data.demo import DemoConfig

pytestmark = pytest.mark.browser

TINY = DemoConfig(num_source=16, num_users=2, images_per_user=12)
STEPS = 120  # long enough that the live screenshot usually shows a running job
LONG = 180_000  # ms: a job's start (importing torch) is slow on two busy cores


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace, _ = create_demo_workspace(tmp_path_factory.mktemp("runs-page") / "ws", seed=0, config=TINY)
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # jobs share two cores with the app, pytest and chromium
    yield workspace
    os.environ.pop("OMP_NUM_THREADS") if previous is None else os.environ.update(OMP_NUM_THREADS=previous)
    stop_jobs(workspace)


@pytest.fixture(scope="module")
def page(ws: Workspace) -> Iterator:
    require_chromium()
    demo, url = launch(ws, default_k=4)  # the whole app: the Runs tab is one of its tabs
    with open_page(url) as tab:
        tab.get_by_role("tab", name="Runs").click()
        yield tab
    demo.close()


def _choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _step(page) -> int:
    match = re.search(r"step (\d+) / (\d+)", page.locator("#runs-header").inner_text())
    return int(match.group(1)) if match else -1


def test_launch_from_the_page_and_watch_progress_move(page, ws: Workspace) -> None:
    page.wait_for_selector("#runs-launch")
    run_on = page.locator("#runs-run-on")  # where the job runs: this machine by default, or the Ray cluster
    assert run_on.get_by_label("this machine").is_checked() and "Ray cluster (" in run_on.inner_text()
    _choose(page, "#runs-preset", "tiny")
    page.wait_for_function("() => document.querySelector('#runs-steps input').value === '3'")  # preset values
    _choose(page, "#runs-method", "source_only")
    page.locator("#runs-steps input").fill(str(STEPS))
    page.locator("#runs-device input").click()
    page.get_by_role("option", name="cpu", exact=True).click()
    page.click("#runs-launch")
    page.wait_for_function("() => (document.querySelector('#runs-form-status')?.innerText || '').includes('on cpu')")
    run_id = page.locator("#runs-selected textarea, #runs-selected input").first.input_value()
    assert run_id in page.locator("#runs-form-status").inner_text()

    # the timer polls: the step counter moves without any click
    page.wait_for_function("() => /step [1-9]\\d* \\//.test(document.querySelector('#runs-header')?.innerText || '')",
                           timeout=LONG)
    first = _step(page)
    page.wait_for_function(f"""() => {{
        const m = (document.querySelector('#runs-header')?.innerText || '').match(/step (\\d+) \\//);
        return m && Number(m[1]) > {first}; }}""", timeout=LONG)
    assert 0 < first < _step(page) <= STEPS
    page.wait_for_selector("#runs-losses .js-plotly-plot .scatterlayer .trace")
    # the header and the buttons come from one poll: read them together, since on a quiet machine the run can
    # finish between two separate reads. While it runs, Cancel is on and Resume off; once done, both are off.
    state = page.evaluate("""() => ({header: document.querySelector('#runs-header')?.innerText || '',
                                     cancel: !document.querySelector('#runs-cancel').disabled,
                                     resume: !document.querySelector('#runs-resume').disabled})""")
    assert not state["resume"]
    assert state["cancel"] == bool(re.search(r"· running\b", state["header"])), state
    page.screenshot(path=str(SCREENSHOTS / "runs_live.png"), full_page=True)

    page.wait_for_function("() => /done on/.test(document.querySelector('#runs-header')?.innerText || '')",
                           timeout=LONG)  # "done · process exiting on cpu" until the worker has collected it
    page.wait_for_function("() => (document.querySelector('#runs-metrics')?.innerText || '').includes('FIoU')")
    page.wait_for_selector("#runs-classes .js-plotly-plot .barlayer")
    assert _step(page) == STEPS
    page.wait_for_function(f"() => (document.querySelector('#runs-history')?.innerText || '').includes('{run_id}')")
    page.screenshot(path=str(SCREENSHOTS / "runs_done.png"), full_page=True)
    assert page.errors == []


def test_open_from_history_then_delete_with_confirmation(page, ws: Workspace) -> None:
    run_id = job_service(ws).store.list_runs()[0].run_id
    page.locator("#runs-selected textarea, #runs-selected input").first.fill("")
    page.wait_for_function("() => (document.querySelector('#runs-header')?.innerText || '') === ''")
    page.locator("#runs-history [data-testid^='cell-']", has_text=run_id).first.click()  # a row opens its run
    page.wait_for_function(f"() => (document.querySelector('#runs-header')?.innerText || '').includes('{run_id}')")
    page.click("#runs-delete")
    page.wait_for_selector("#runs-delete-confirm", state="visible")
    assert run_id in page.locator("#runs-delete-question").inner_text()
    page.click("#runs-delete-confirm")
    page.wait_for_function("() => (document.querySelector('#runs-action-status')?.innerText || '')"
                           ".includes('deleted run')")
    page.wait_for_function(f"() => !(document.querySelector('#runs-history')?.innerText || '').includes('{run_id}')")
    assert not (ws.runs / run_id).exists() and page.errors == []
