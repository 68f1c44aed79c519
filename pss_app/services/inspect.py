"""Inspect one image under one run: plain functions behind the Inspect tab (no gradio here).

The engine draws the maps (``pss.api.inspect_maps``: PNG files in the workspace cache); these functions pick
the runs and images a user can inspect, and turn the engine's values into what the widgets show: captions,
a legend, the class probabilities at a clicked pixel and the attention table whose rows add up to 1.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from pss.api import Workspace, done_runs, user_records
from pss.api.inspect_maps import InspectMaps, PixelInspection, inspect_maps, inspect_pixel
from pss.api.maps import DisplaySize
from pss.api.users import MASK_SCORED, MASK_TRAINING, mask_role
from pss.errors import DatasetError

TOP_REGIONS = 8
TOP_IMAGES = 3
ATTENTION_COLUMNS = ["rank", "image", "class", "weight"]


def run_choices(ws: Workspace, user: str) -> list[tuple[str, str]]:
    """(label, run id) of the user's finished runs, newest first."""
    if not user:
        return []
    return [(run.label, run.run_id) for run in done_runs(ws, user)]


def image_choices(ws: Workspace, user: str) -> list[tuple[str, str]]:
    """(label, name) of the user's images: evaluation images first (``· GT``: a scored ground truth to compare
    with), then images annotated for training (their mask is never scored), then the unlabelled ones."""
    if not user:
        return []
    records = user_records(ws, user)
    roles = {r.name: mask_role(r) for r in records}
    order = {MASK_SCORED: 0, MASK_TRAINING: 1, None: 2}
    ordered = sorted(records, key=lambda r: order[roles[r.name]])  # stable: folder order within each part
    suffix = {MASK_SCORED: " · GT", MASK_TRAINING: f" · {MASK_TRAINING}", None: ""}
    return [(f"{r.name}{suffix[roles[r.name]]}", r.name) for r in ordered]


@dataclass
class InspectView:
    """Everything the Inspect tab shows for one (run, image) before a pixel is clicked."""

    maps: InspectMaps
    summary: str
    pseudo: str
    legend: str
    attention_note: str

    @property
    def display(self) -> DisplaySize:
        return self.maps.display


def legend_html(rows: list[tuple[str, str, float]]) -> str:
    items = "".join(f"<span class='pss-legend-item'><span class='pss-swatch' style='background:{colour}'></span>"
                    f"{html.escape(name)} {share:.1f}%</span>" for name, colour, share in rows)
    return f"<div class='pss-legend'>{items}</div>"


def pseudo_text(view: InspectMaps) -> str:
    """Whether the next stage (PSS step 2 for a PSS run) pseudo-labels the image, with the rank that decides it."""
    p = view.pseudo
    stage = "step 2" if p.stage == "pss_s2" else f"`{p.stage}`"
    verdict = f"**selected** for {stage}" if p.selected else f"**not selected** for {stage}"
    return (f"{verdict}: mean entropy rank {p.rank} of {p.total} (the {p.keep} lowest are kept, r = "
            f"{p.select_rate:g}). Inside a selected image the {p.pixel_keep_rate:.0%} most certain pixels keep "
            f"their label; the rest ({view.ignored_fraction:.1%} here) are ignored (255, hatched).")


def inspect_view(ws: Workspace, run_id: str, name: str, opacity: float = 0.6, stretch: bool = False) -> InspectView:
    """The maps of image ``name`` under run ``run_id`` with their captions.

    Raises DatasetError for a missing choice; RunStoreError / CheckpointError (a run without a usable
    checkpoint) and DatasetError (unreadable image) come from the engine with their messages.
    """
    if not run_id:
        raise DatasetError("choose a finished run first (the list shows the selected user's finished runs)")
    if not name:
        raise DatasetError("choose an image of the run's user")
    maps = inspect_maps(ws, run_id, name, opacity, bool(stretch))
    summary = (f"**{maps.name}** · {maps.user} · {maps.width}×{maps.height} · context `{maps.context}`  \n"
               f"mean entropy **{maps.pseudo.mean_entropy:.4f}** (rank {maps.pseudo.rank} of {maps.pseudo.total}, "
               f"1 = most certain)")
    if maps.mask_role is not None:  # shown for reference; Inspect scores nothing, Compare scores only GT
        summary += f"  \nmask: **{maps.mask_role}**"
    if maps.has_attention:
        note = "Click a pixel of the prediction to see which regions of its group it attends to."
    else:
        note = (f"This run's model has no group region context (context `{maps.context}`): clicking a pixel "
                f"shows its class probabilities and entropy only.")
    return InspectView(maps, summary, pseudo_text(maps), legend_html(maps.legend), note)


@dataclass
class PixelView:
    """What the Inspect tab shows for one clicked pixel.

    ``attention_rows`` ([rank, image, class, weight]) are the top regions plus one row for all other regions,
    so the weights add up to the row sum of the attention (1).
    """

    pixel: PixelInspection
    probabilities: dict[str, float]
    heading: str
    attention_rows: list[list[int | str | float]] = field(default_factory=list)
    region_gallery: list[tuple[str, str]] = field(default_factory=list)

    @property
    def marked(self) -> Path:
        return self.pixel.marked

    @property
    def attention_total(self) -> float:
        return float(sum(float(row[3]) for row in self.attention_rows))


def to_image_pixel(x: float, y: float, display: DisplaySize, width: int, height: int) -> tuple[int, int]:
    """Image pixel under a click at display pixel (x, y)."""
    return display.to_image(x, y, width, height)


def pixel_view(ws: Workspace, run_id: str, name: str, x: float, y: float, opacity: float = 0.6,
               top: int = TOP_REGIONS) -> PixelView:
    """Class probabilities, entropy and group attention at image pixel (x, y)."""
    if not run_id or not name:
        raise DatasetError("open an image of a run first")
    if x is None or y is None:
        raise DatasetError("click a pixel of the prediction (or type its x and y)")
    pixel = inspect_pixel(ws, run_id, name, int(x), int(y), top=top, top_images=TOP_IMAGES, opacity=opacity)
    probabilities = {cls: p for cls, p in pixel.probabilities[:5]}
    heading = (f"pixel ({pixel.x}, {pixel.y}) · predicted **{pixel.label}** · entropy **{pixel.entropy:.4f}** · "
               f"feature cell {pixel.cell} of a {pixel.grid[0]}×{pixel.grid[1]} grid")
    view = PixelView(pixel, probabilities, heading)
    if pixel.regions:
        view.attention_rows = [[i + 1, r.image, r.class_name, round(r.weight, 6)] for i, r in enumerate(pixel.regions)]
        view.attention_rows.append(["", f"{pixel.other_regions} other regions", "", round(pixel.other_weight, 6)])
        view.region_gallery = [(str(path), caption) for path, caption in pixel.region_maps]
    return view

