"""Inspect and Compare in a real browser (Playwright driving Debian's chromium): click a pixel, compare two runs.

Screenshots go to the test's temporary folder. With ``PSS_SCREENSHOT_WORKSPACE=<a workspace with finished runs
of id1>`` the test runs on that workspace instead of the tiny one and writes the README screenshots
``assets/screenshots/inspect_*.png`` and ``compare_*.png`` (the tiny 2-step runs predict nothing worth showing).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser_support import SCREENSHOTS, open_page, require_chromium, wait_text
from inspect_support import launch, trained_workspace

pytestmark = pytest.mark.browser

LONG = 180_000  # ms: the first inference loads the model (seconds on two busy cores)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    require_chromium()
    given = os.environ.get("PSS_SCREENSHOT_WORKSPACE")
    if given:
        from pss.workspace import Workspace

        ws, shots = Workspace(Path(given)), SCREENSHOTS
    else:
        ws, shots = trained_workspace(tmp_path_factory).ws, tmp_path_factory.mktemp("screenshots")
    demo, url = launch(ws)
    yield url, shots
    demo.close()


@pytest.fixture(scope="module")
def page(served) -> Iterator:
    url, shots = served
    with open_page(url, width=1500, timeout_ms=LONG) as tab:
        tab.shots = shots
        yield tab


def test_inspect_click_a_pixel(page) -> None:
    page.get_by_role("tab", name="Inspect").click()
    page.wait_for_selector("#inspect-prediction img")
    if "OURS-S1" not in page.locator("#inspect-run input").input_value():  # a workspace with more runs
        page.locator("#inspect-run input").click()
        page.get_by_role("option").filter(has_text="OURS-S1").first.click()
    wait_text(page, "#inspect-summary", "context group")  # a run with the group region context
    page.wait_for_selector("#inspect-entropy img")
    page.wait_for_selector("#inspect-pseudo img")
    wait_text(page, "#inspect-pseudo-info", "step 2")
    for selector in ("#inspect-prediction img", "#inspect-entropy img", "#inspect-pseudo img"):
        assert page.locator(selector).first.get_attribute("src").endswith(".png")  # never a webp re-encoding
    before = page.locator("#inspect-prediction img").first.get_attribute("src")
    box = page.locator("#inspect-prediction img").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.6)
    wait_text(page, "#inspect-pixel", "pixel (")
    wait_text(page, "#inspect-attention", "other regions")
    page.wait_for_selector("#inspect-regions img")
    page.wait_for_function("(s) => document.querySelector('#inspect-prediction img')?.getAttribute('src') !== s",
                           arg=before)  # the prediction now carries the crosshair
    x = float(page.locator("#inspect-x input").input_value())
    assert 0.45 < x / _image_width(page) < 0.65  # display pixels were mapped back to image pixels
    assert page.locator("#inspect-probabilities").inner_text().strip() != ""
    page.screenshot(path=str(page.shots / "inspect_pixel.png"), full_page=True)
    assert page.errors == []


def _image_width(page) -> int:
    """The inspected image's width, from the summary line ``name · user · W×H · context ...``."""
    return int(page.locator("#inspect-summary").inner_text().split("·")[2].strip().split("×")[0])


def test_compare_two_runs(page) -> None:
    page.get_by_role("tab", name="Compare").click()
    page.wait_for_selector("#compare-figure img")
    assert page.locator("#compare-runs input[type=checkbox]:checked").count() >= 2
    assert page.locator("#compare-figure img").first.get_attribute("src").endswith(".png")
    wait_text(page, "#compare-scores", "FIoU")
    wait_text(page, "#compare-differences", "B - A")
    wait_text(page, "#compare-fiou", "Mean")
    wait_text(page, "#compare-per-class", "background")
    page.screenshot(path=str(page.shots / "compare_runs.png"), full_page=True)
    current = page.locator("#compare-image input").input_value().split(" ")[0]
    rows = page.locator("#compare-differences .virtual-row")
    cell = next(c for c in (rows.nth(i).locator("[role=gridcell]").first for i in range(rows.count()))
                if c.inner_text().strip() != current)
    other = cell.inner_text().strip()
    before = page.locator("#compare-figure img").first.get_attribute("src")
    cell.click()  # a row of the table opens that image in the figure
    page.wait_for_function("(s) => document.querySelector('#compare-figure img')?.getAttribute('src') !== s",
                           arg=before)
    assert other in page.locator("#compare-image input").input_value()
    page.click("#compare-export")
    page.wait_for_selector("#compare-files td.filename[aria-label='per_class_iou.csv']")
    assert page.locator("#compare-files a[data-testid=download-link]").count() == 4
    page.locator("#compare-figure").screenshot(path=str(page.shots / "compare_figure.png"))
    assert page.errors == []
