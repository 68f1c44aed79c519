"""The Runs view's figures: losses, evaluation curves and the final per-class IoU (plotly), from a run's events."""
from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

NOT_LOSSES = {"step", "time", "kind", "lr", "seconds"}
_LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=40, b=10), height=300,
               legend=dict(orientation="h", y=-0.25))


def pct(value: float | None) -> float | None:
    """A fraction as a percentage rounded to 2 decimals; None for a missing or NaN value."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(100 * value, 2)


def _empty(title: str, message: str, height: int = 300) -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                          font=dict(size=14, color="#888"))
    figure.update_layout(title=title, xaxis=dict(visible=False), yaxis=dict(visible=False),
                         **{**_LAYOUT, "height": height})
    return figure


def loss_figure(train: list[dict[str, Any]]) -> go.Figure:
    """One line per named loss against the step."""
    if not train:
        return _empty("Losses", "waiting for the first step")
    names = [k for k in train[-1] if k not in NOT_LOSSES]
    figure = go.Figure()
    for name in names:
        points = [(e["step"], e[name]) for e in train if e.get(name) is not None]
        figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                    name=name, marker=dict(size=4)))
    figure.update_layout(title="Losses", xaxis_title="step", **_LAYOUT)
    return figure


def eval_figure(evals: list[dict[str, Any]], total_steps: int = 0,
                source_evals: list[dict[str, Any]] | None = None) -> go.Figure:
    """FIoU and MIoU (PSS convention), in %, at each evaluation of the user and (dashed) of the source's held-out
    split (``source_val`` events); the x axis spans the whole run."""
    source_evals = source_evals or []
    if not evals and not source_evals:
        return _empty("Evaluation (%)", "no evaluation yet (at the end, or every train.eval_every steps)")
    figure = go.Figure()
    for series, prefix, dash in ((evals, "", None), (source_evals, "source val ", "dash")):
        for key, label in (("fiou", "FIoU"), ("miou", "MIoU")):
            if series:
                figure.add_trace(go.Scatter(x=[e["step"] for e in series], y=[pct(e.get(key)) for e in series],
                                            mode="lines+markers", name=prefix + label, line=dict(dash=dash)))
    last = max([total_steps, *(e["step"] for e in evals + source_evals)])
    figure.update_layout(title="Evaluation (%)", xaxis=dict(title="step", range=[0, last * 1.03]), **_LAYOUT)
    return figure


def class_iou_figure(report: dict[str, Any] | None) -> go.Figure:
    """Per-class IoU (PSS convention) of the final evaluation."""
    if not report:
        return _empty("Per-class IoU (%)", "available when the run is done", height=150)
    values = [pct(v) for v in report["per_class_iou"]["pss"]]
    figure = go.Figure(go.Bar(x=report["class_names"], y=values, marker_color="#1f77b4"))
    figure.update_layout(title="Per-class IoU (%) of the final evaluation", **{**_LAYOUT, "height": 320})
    return figure
