"""The Inspect tab's section for the weak-supervision runs (issues 17, 18) as plain functions (no gradio here).

``pss.api.weak_views`` draws what each stage wrote for an image; these functions turn it into the section's
captions: the CAM gallery, three stage panels with their labels, the stage-quality table, the strong/weak split,
and, for a clicked pixel of an ``eps_affinity`` run, what its affinity heat map shows. A run of another method
is not an error here: the section says it has no stages to show.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from pss.api import Workspace
from pss.api.weak_views import (WEAK_METHODS, WeakView, pixel_affinities, run_method, transfer_images, weak_kind,
                                weak_view)
from pss.errors import DatasetError

PANELS = 3  # EPS: saliency, EPS mask, refined mask; transfer: object map, coarse label, training labels
EMPTY_LABELS = ("stage map", "stage map", "stage map")


@dataclass
class WeakSection:
    """What the section shows: ``info`` (markdown), ``cams`` ((PNG, class name) gallery), ``panels`` (PNG or None,
    label) x PANELS, ``display`` (JSON of the drawn size, clicks come in its pixels) and ``pixel_note``."""

    info: str
    cams: list[tuple[str, str]] = field(default_factory=list)
    panels: list[tuple[str | None, str]] = field(default_factory=lambda: [(None, label) for label in EMPTY_LABELS])
    display: str = ""
    pixel_note: str = ""
    sources: list[str] = field(default_factory=list)  # a transfer run's source images (its maps are of those)
    source: str | None = None  # the one shown


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}"


def _info(view: WeakView) -> str:
    lines = [f"**{view.name}** under `{view.run_id}` · method **{view.method}**"]
    if view.saliency_source:
        lines[0] += f" · saliency from {'the user (SALImages/)' if view.saliency_source == 'user' else 'our model'}"
    if view.quality:
        lines += ["", "Pseudo-mask quality of each stage on the user's evaluation images (scored, never trained on):",
                  "", "| stage | FIoU (%) | MIoU (%) | images |", "|---|---|---|---|"]
        lines += [f"| {q.stage} | {_pct(q.fiou)} | {_pct(q.miou)} | {q.num_images if q.num_images is not None else '–'}"
                  " |" for q in view.quality]
    if view.split is not None:
        lines += ["", "Split: " + view.split.text()]
    if view.coarse_quality:
        q = view.coarse_quality
        parts = [f"{key} {_pct(q.get(key))}" for key in ("all", "strong", "weak") if key in q]
        lines += ["", f"Coarse labels vs the source masks: mIoU (%) {' · '.join(parts)}"
                      + (f" · coverage {_pct(q['coverage'])} %" if "coverage" in q else "")]
    if view.messages:
        lines += ["", *[f"- {message}" for message in view.messages]]
    return "\n".join(lines)


def weak_section(ws: Workspace, run_id: str | None, name: str | None, source: str | None = None) -> WeakSection:
    """The section for ``run_id`` and the user's image ``name`` (an EPS run) or source image ``source`` (a transfer
    run: its maps are of the source's split images; default its first): empty without a run and image, a note for
    a run of another method; DatasetError for an unknown run or image."""
    if not run_id:
        return WeakSection("")
    method = run_method(ws, run_id)  # DatasetError for a run that is not there
    kind = weak_kind(method)
    if kind is None:
        return WeakSection(f"`{run_id}` is a {method} run, not a weak-supervision run: the stage views are for "
                           f"runs of {', '.join(WEAK_METHODS)}.")
    sources: list[str] = []
    if kind == "transfer":
        sources = transfer_images(ws, run_id)
        if not sources:
            return WeakSection(f"`{run_id}` (transfer) has written no stage map yet.")
        name = source if source in sources else sources[0]
    if not name:
        return WeakSection("")
    view = weak_view(ws, run_id, name)
    panels: list[tuple[str | None, str]] = [(str(p.path) if p.path else None,
                                             p.caption if p.path else f"{p.caption} (missing)") for p in view.panels]
    panels += [(None, "—")] * (PANELS - len(panels))
    display = json.dumps({"width": view.display.width, "height": view.display.height, "scale": view.display.scale,
                          "image_width": view.width, "image_height": view.height})
    if view.has_affinity:
        note = ("Click a pixel of a stage map (or type its x and y) to see its affinities to its neighbours within "
                "radius 5 on AffinityNet's stride-8 feature grid.")
    elif view.method == "eps_affinity":
        note = "No AffinityNet weights in this run yet: pixel affinities appear when its affinity stage is done."
    else:
        note = f"A {view.method} run has no AffinityNet: pixel affinities are for eps_affinity runs."
    if kind == "transfer":
        note = (f"Transfer runs write their maps for the source's split images ({len(sources)} here, the weak-class "
                "images with a coarse label first): pick one above. " + note)
    return WeakSection(_info(view), [(str(p), caption) for p, caption in view.cams], panels[:PANELS], display, note,
                       sources, name if kind == "transfer" else None)


@dataclass
class WeakPixel:
    heat: str
    text: str


def weak_pixel(ws: Workspace, run_id: str | None, name: str | None, x: float | None, y: float | None) -> WeakPixel:
    """The affinity heat map of image pixel (x, y) and a line saying what it shows."""
    if not run_id or not name:
        raise DatasetError("open an image of an eps_affinity run first")
    if x is None or y is None:
        raise DatasetError("click a pixel of a stage map (or type its x and y)")
    result = pixel_affinities(ws, run_id, name, int(x), int(y))
    others = [v for dy, dx, v in result.neighbours if (dy, dx) != (0, 0)]
    spread = (f"neighbours: min **{min(others):.3f}** · mean **{sum(others) / len(others):.3f}** · max "
              f"**{max(others):.3f}**" if others else "no neighbour inside the grid")
    text = (f"pixel ({result.x}, {result.y}) · feature cell {result.cell} of a {result.grid[0]}×{result.grid[1]} grid "
            f"(stride {result.stride}) · {len(others)} neighbours within radius {result.radius} · self-affinity 1 · "
            f"{spread}. Affinity W = exp(−mean |f_i − f_j|) (bright = same region).")
    return WeakPixel(str(result.heat), text)


__all__ = ["EMPTY_LABELS", "PANELS", "WeakPixel", "WeakSection", "weak_pixel", "weak_section"]
