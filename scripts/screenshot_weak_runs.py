"""Screenshots of the Inspect tab's weak-supervision section for REAL runs (the browser test's screenshot shows fake,
hand-made maps): an ``eps_affinity`` run (CAMs of the tagged classes, saliency, EPS and refined masks, a clicked
pixel's affinities) and a ``transfer`` run (object map, coarse label, the strong/weak split).

    python scripts/screenshot_weak_runs.py -w WS --eps RUN --transfer RUN [--image NAME]

Writes ``assets/screenshots/inspect_weak_eps.png`` and ``inspect_weak_transfer.png`` (the README's). The runs are
trained with ``pss train`` (README "Tags as supervision" / "Weak supervision: transfer").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "app"))  # the browser tests' helpers (chromium page, app launch)
sys.path.insert(0, str(ROOT / "tests"))

from browser_support import SCREENSHOTS, open_page, pick, wait_text  # noqa: E402
from inspect_support import launch  # noqa: E402

from pss.api.users import read_user  # noqa: E402
from pss.workspace import Workspace  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-w", "--workspace", required=True)
    p.add_argument("--eps", required=True, help="an eps_affinity run id")
    p.add_argument("--transfer", required=True, help="a transfer run id")
    p.add_argument("--user", default="id1")
    p.add_argument("--image", help="the user's image (default: the first labelled one with two or more tags)")
    args = p.parse_args()
    ws = Workspace(Path(args.workspace))
    records = read_user(ws, args.user).records
    name = args.image or next(r.name for r in records if r.mask_path is not None and len(r.tags or ()) >= 2)
    demo, url = launch(ws)
    try:
        with open_page(url, width=1500, timeout_ms=180_000) as page:
            page.get_by_role("tab", name="Inspect").click()
            page.wait_for_selector("#inspect-run input")
            pick(page, "#inspect-run", args.eps)
            pick(page, "#inspect-image", name)
            wait_text(page, "#inspect-weak-info", "eps_affinity")
            page.wait_for_selector("#inspect-weak-panel2 img", state="attached")
            page.locator("#inspect-weak").scroll_into_view_if_needed()
            target = page.locator("#inspect-weak-panel1 img").first
            target.scroll_into_view_if_needed()
            box = target.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.55)
            wait_text(page, "#inspect-weak-pixel", "neighbours within radius")
            page.wait_for_selector("#inspect-weak-affinity img")
            page.wait_for_timeout(1000)
            page.locator("#inspect-weak").screenshot(path=str(SCREENSHOTS / "inspect_weak_eps.png"))
            pick(page, "#inspect-run", args.transfer)
            wait_text(page, "#inspect-weak-info", "weak")
            page.wait_for_selector("#inspect-weak-panel1 img", state="attached")
            page.wait_for_timeout(1500)
            page.locator("#inspect-weak").screenshot(path=str(SCREENSHOTS / "inspect_weak_transfer.png"))
            if page.errors:
                print("page errors:", page.errors, file=sys.stderr)
                return 1
    finally:
        demo.close()
    print(f"wrote {SCREENSHOTS / 'inspect_weak_eps.png'} and {SCREENSHOTS / 'inspect_weak_transfer.png'} ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
