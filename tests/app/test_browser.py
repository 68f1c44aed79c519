"""The pages in a real browser (Playwright driving Debian's chromium): every tab, a user, a group, an image.

Saves the README screenshots into ``assets/screenshots/``. Needs ``/usr/bin/chromium`` (``.ci/run`` installs
it with apt-get); Playwright's own browser download is not used.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser_support import SCREENSHOTS, open_page, wait_text

pytestmark = pytest.mark.browser

LONG = 240_000  # ms: computing groups pays UMAP's first-call compile (~10-30 s on two busy cores)


@pytest.fixture(scope="module")
def page(app) -> Iterator:
    with open_page(app.url) as tab:
        yield tab
        tab.screenshot(path=str(Path(app.ws.root).parent / "last-page.png"), full_page=True)  # for debugging


def _text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def _choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _settle(page) -> None:
    """Wait until no component shows Gradio's "processing" timer (every triggered event has finished)."""
    page.wait_for_function("() => !document.body.innerText.includes('processing |')")


def _point_centre(page, index: int) -> tuple[float, float]:
    box = page.locator("#groups-scatter .scatterlayer .point").nth(index).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _hover_a_point(page) -> None:
    """Hover a scatter point until its thumbnail shows. After a lasso the page has grown (the gallery) and a mouse
    already resting where a point is draws no new hover: scroll the plot into view, come from outside, and try the
    next point if one is covered (this wait failed when the module ran on a loaded machine, never alone)."""
    page.locator("#groups-scatter").scroll_into_view_if_needed()
    for index in range(4):
        page.mouse.move(1, 1)
        page.mouse.move(*_point_centre(page, index), steps=5)
        try:
            page.wait_for_selector("#groups-scatter .pss-hover img", state="visible", timeout=15_000)
            return
        except Exception:  # playwright's TimeoutError: try the next point
            continue
    page.wait_for_selector("#groups-scatter .pss-hover img", state="visible")  # the last chance, with its error


def test_images_tab_user_and_image(page, app) -> None:
    from pss.api import read_user

    records = read_user(app.ws, "id2").records
    page.wait_for_selector("#images-gallery img")
    _choose(page, "#user", "id2")
    wait_text(page, "#images-info", f"of {len(records)}")
    page.locator("#images-labelled").get_by_text("labelled", exact=True).click()
    wait_text(page, "#images-info", f"of {sum(r.labelled for r in records)}")
    page.locator("#images-gallery img").nth(1).click()
    page.wait_for_selector("#image-view img")
    wait_text(page, "#image-details", "labelled (GT mask)")
    assert page.locator("#image-legend .pss-swatch").count() >= 2  # background + at least one object class
    name = page.locator("#image-name textarea, #image-name input").first.input_value()
    assert re.fullmatch(r"\w+", name)
    src = page.locator("#image-view img").first.get_attribute("src")
    assert src.endswith(".png")  # the overlay is the PNG file, never a webp re-encoding
    _settle(page)
    page.screenshot(path=str(SCREENSHOTS / "images.png"), full_page=True)
    assert page.errors == []


def test_groups_tab_group_lasso_and_open_image(page) -> None:
    page.get_by_role("tab", name="Groups").click()
    if page.locator("#groups-scatter .main-svg").count() == 0:
        page.click("#groups-compute")
    page.wait_for_selector("#groups-scatter .scatterlayer .point", timeout=LONG)
    page.wait_for_selector("#groups-gallery img", timeout=LONG)  # the first group is shown right away
    # click a point: its group's images
    x, y = _point_centre(page, 3)
    page.mouse.move(x, y)
    page.wait_for_selector("#groups-scatter .pss-hover img", state="visible")  # hover shows the thumbnail
    page.mouse.click(x, y)
    wait_text(page, "#groups-selection-info", "group ")
    _settle(page)
    assert "lasso" not in _text(page, "#groups-selection-info")  # a click picks the point's group
    # lasso the left half of the plot: those images
    area = page.locator("#groups-scatter .nsewdrag").first.bounding_box()
    corners = [(0.01, 0.01), (0.5, 0.01), (0.5, 0.99), (0.01, 0.99), (0.01, 0.02)]
    page.mouse.move(area["x"] + area["width"] * corners[0][0], area["y"] + area["height"] * corners[0][1])
    page.mouse.down()
    for fx, fy in corners[1:]:
        page.mouse.move(area["x"] + area["width"] * fx, area["y"] + area["height"] * fy, steps=6)
    page.mouse.up()
    wait_text(page, "#groups-selection-info", "lasso selection")
    page.wait_for_selector("#groups-gallery img")
    _settle(page)
    _hover_a_point(page)  # hover again so the screenshot shows the thumbnail box
    _settle(page)
    assert "lasso selection of" in _text(page, "#groups-selection-info")
    page.screenshot(path=str(SCREENSHOTS / "groups.png"), full_page=True)
    # a thumbnail in the group gallery opens the image in the Images tab
    page.locator("#groups-gallery img").first.click()
    page.wait_for_selector("#tab-images #image-view img", state="visible")
    assert page.errors == []


def test_statistics_tab(page) -> None:
    page.get_by_role("tab", name="Statistics").click()
    for chart in ("proportion", "cooccurrence", "object-size", "instances"):
        page.wait_for_selector(f"#stats-{chart} .js-plotly-plot .main-svg")
    wait_text(page, "#stats-summary", "id1, id2")
    _settle(page)
    assert page.locator("#stats-cooccurrence .heatmaplayer image, #stats-cooccurrence .hm").count() >= 1
    page.screenshot(path=str(SCREENSHOTS / "statistics.png"), full_page=True)
    assert page.errors == []
