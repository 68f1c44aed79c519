"""Line charts with error bars as PNG, drawn with Pillow.

The environment has neither matplotlib nor a plotly image exporter (kaleido), and nothing is downloaded at run
time; Pillow is a dependency already. Enough for an experiment's curve: panels side by side, categorical x
positions (e.g. counts 0/5/10/20/40, evenly spaced), one line per series with mean ± std bars.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


@dataclass(frozen=True)
class Series:
    """One line: ``y[i] ± err[i]`` at x position ``i`` (``None`` = no point)."""

    label: str
    y: list[float | None]
    err: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class Panel:
    title: str  # names the metric and its unit, e.g. "FIoU (%)"
    x_labels: list[str]
    x_title: str
    series: list[Series]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _nice_range(values: list[float]) -> tuple[float, float, float]:
    """(low, high, tick step) covering ``values`` with round ticks."""
    low, high = min(values), max(values)
    if math.isclose(low, high):
        low, high = low - 1, high + 1
    raw = (high - low) / 5
    step = 10 ** math.floor(math.log10(raw))
    step = next(m * step for m in (1, 2, 5, 10) if m * step >= raw)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def draw_panel(draw: ImageDraw.ImageDraw, panel: Panel, box: tuple[int, int, int, int]) -> None:
    """Axes, ticks, error bars, lines and legend of ``panel`` inside ``box`` = (left, top, right, bottom)."""
    left, top, right, bottom = box
    font, small = _font(15), _font(12)
    x0, y0, x1, y1 = left + 60, top + 30, right - 10, bottom - 45  # the plotting area
    draw.text(((left + right) // 2, top + 4), panel.title, fill="black", font=font, anchor="mt")
    values: list[float] = []  # every bar's ends, so the axis covers them
    for series in panel.series:
        for i, v in enumerate(series.y):
            if v is not None:
                err = (series.err[i] if i < len(series.err) else None) or 0.0
                values += [v - err, v + err]
    low, high, step = _nice_range(values or [0.0, 1.0])
    n = max(1, len(panel.x_labels))

    def px(i: int) -> float:
        return x0 + (x1 - x0) * ((i + 0.5) / n)

    def py(v: float) -> float:
        return y1 - (y1 - y0) * (v - low) / (high - low)

    tick = low
    while tick <= high + step / 2:
        y = py(tick)
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 6, y), f"{tick:g}", fill="black", font=small, anchor="rm")
        tick += step
    draw.rectangle([x0, y0, x1, y1], outline="black")
    for i, label in enumerate(panel.x_labels):
        draw.text((px(i), y1 + 6), label, fill="black", font=small, anchor="mt")
    draw.text(((x0 + x1) // 2, bottom - 16), panel.x_title, fill="black", font=small, anchor="mt")
    offsets = [(k - (len(panel.series) - 1) / 2) * 6 for k in range(len(panel.series))]  # bars side by side
    for k, series in enumerate(panel.series):
        color = PALETTE[k % len(PALETTE)]
        points = [(px(i) + offsets[k], py(v)) for i, v in enumerate(series.y) if v is not None]
        for i, v in enumerate(series.y):
            bar = series.err[i] if i < len(series.err) else None
            if v is None or not bar:
                continue
            x = px(i) + offsets[k]
            draw.line([(x, py(v - bar)), (x, py(v + bar))], fill=color, width=2)
            for end in (v - bar, v + bar):
                draw.line([(x - 4, py(end)), (x + 4, py(end))], fill=color, width=2)
        if len(points) > 1:
            draw.line(points, fill=color, width=3)
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        ly = y0 + 8 + 18 * k
        draw.line([(x0 + 10, ly), (x0 + 30, ly)], fill=color, width=3)
        draw.text((x0 + 36, ly), series.label, fill="black", font=small, anchor="lm")


def save_chart(path: Path, panels: list[Panel], title: str = "", panel_size: tuple[int, int] = (460, 360)) -> Path:
    """``panels`` side by side (with an optional ``title`` above) as a PNG at ``path``."""
    width, height = panel_size
    head = 30 if title else 0
    image = Image.new("RGB", (width * len(panels), height + head), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((image.width // 2, 8), title, fill="black", font=_font(16), anchor="mt")
    for k, panel in enumerate(panels):
        draw_panel(draw, panel, (k * width, head, (k + 1) * width, head + height))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
