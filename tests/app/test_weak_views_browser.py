"""The Inspect tab's weak-supervision section in a real browser (Playwright driving Debian's chromium): an EPS run's
CAM gallery and stage maps render, and clicking a stage map shows the pixel's affinity heat map; a transfer run
shows its split and its source-image picker. Writes
``assets/screenshots/inspect_weak.png`` (the fake run of tests/app/weak_support.py: hand-made maps on a demo image).
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from browser_support import SCREENSHOTS, open_page, pick, require_chromium, wait_text
from inspect_support import launch
from weak_support import weak_workspace

pytestmark = pytest.mark.browser

LONG = 120_000  # ms: two busy cores


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator:
    require_chromium()
    weak = weak_workspace(tmp_path_factory)
    demo, url = launch(weak.ws)
    with open_page(url, width=1500, timeout_ms=LONG) as tab:
        tab.weak = weak
        yield tab
    demo.close()


def test_the_eps_section_renders_and_a_click_shows_affinities(page) -> None:
    weak = page.weak
    page.get_by_role("tab", name="Inspect").click()
    page.wait_for_selector("#inspect-run input")
    pick(page, "#inspect-run", weak.eps)
    pick(page, "#inspect-image", weak.a)
    wait_text(page, "#inspect-weak-info", "eps_affinity")
    wait_text(page, "#inspect-weak-info", "refined")  # the stage-quality table
    page.wait_for_function("() => document.querySelectorAll('#inspect-weak-cams img').length === 2")
    wait_text(page, "#inspect-weak-cams", "cat")
    wait_text(page, "#inspect-weak-cams", "person")
    for i in range(3):
        page.wait_for_selector(f"#inspect-weak-panel{i} img")
        assert page.locator(f"#inspect-weak-panel{i} img").first.get_attribute("src").endswith(".png")
    wait_text(page, "#inspect-weak-panel1", "EPS pseudo mask")
    wait_text(page, "#inspect-weak-panel2", "AffinityNet-refined mask")
    target = page.locator("#inspect-weak-panel1 img").first
    target.scroll_into_view_if_needed()  # the section is below the fold: a mouse click needs it in the viewport
    box = target.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    wait_text(page, "#inspect-weak-pixel", "neighbours within radius 5")
    page.wait_for_selector("#inspect-weak-affinity img")
    x = float(page.locator("#inspect-weak-x input").input_value())
    assert 0.4 < x / weak.size[1] < 0.6  # display pixels were mapped back to image pixels
    # the fake runs have no segmenter checkpoint: the main Inspect view's warnings would cover the section
    page.evaluate("() => document.querySelectorAll('.toast-wrap').forEach(e => e.remove())")
    page.wait_for_timeout(500)
    page.locator("#inspect-weak").screenshot(path=str(SCREENSHOTS / "inspect_weak.png"))
    assert page.errors == []


def test_a_transfer_run_shows_its_source_images_and_split(page) -> None:
    weak = page.weak
    page.get_by_role("tab", name="Inspect").click()
    pick(page, "#inspect-run", weak.transfer)
    wait_text(page, "#inspect-weak-info", "cat, dog")  # the weak classes
    page.wait_for_selector("#inspect-weak-source input")  # the source-image picker shows for a transfer run
    page.wait_for_function("t => document.querySelector('#inspect-weak-source input')?.value === t", arg=weak.s0)
    wait_text(page, "#inspect-weak-panel1", "coarse label")
    page.wait_for_selector("#inspect-weak-panel1 img")
    pick(page, "#inspect-weak-source", weak.s1)  # an object map only
    wait_text(page, "#inspect-weak-panel1", "(missing)")
    wait_text(page, "#inspect-weak-info", "no coarse label")
    page.wait_for_timeout(1500)  # no update loop between the picker and the section: its value stays
    assert page.locator("#inspect-weak-source input").input_value() == weak.s1
    assert page.errors == []
