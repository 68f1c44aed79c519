"""The Groups view: the UMAP scatter coloured by k-means group, group choices, selections, composition bars."""
from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import plotly.graph_objects as go
from plotly.colors import qualitative

from pss.api import CLASS_NAMES, ImageRecord, Workspace, cached_grouping, read_user, thumbnail
from pss.errors import DatasetError, PssError
from pss_app.services.gallery import ALL, GalleryFilter, GalleryPage, class_histogram, filter_records, page_of
# parse_group lives in gallery (the Images tab's group filter uses it too); named here for the Groups tab
from pss_app.services.gallery import parse_group  # noqa: F401

_COLOURS = qualitative.Dark24 + qualitative.Light24 + qualitative.Alphabet
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pss-hover-thumbs")
MAX_LEGEND_GROUPS = 30


def file_url(path: Path) -> str:
    """URL (relative to the page) of a workspace file through Gradio's file route."""
    return "gradio_api/file=" + quote(str(path))


def group_choices(grouping, include_all: bool = False) -> list[tuple[str, str]]:
    """Dropdown choices ``(label, value)``: ``("group 3 · 17 images", "3")``, optionally ``("all", "all")`` first."""
    choices = [("all groups", ALL)] if include_all else []
    if grouping is not None:
        sizes = grouping.sizes()
        choices += [(f"group {g} · {int(n)} images", str(g)) for g, n in enumerate(sizes) if n > 0]
    return choices


def _hover_thumbs(ws: Workspace, records: Sequence[ImageRecord]) -> dict[str, str]:
    def one(record: ImageRecord) -> tuple[str, str]:
        try:
            return record.name, file_url(thumbnail(ws, record.image_path))
        except PssError:
            return record.name, ""  # unreadable: the hover box shows the name only
    return dict(_POOL.map(one, records))


def scatter_figure(ws: Workspace, grouping, records: Sequence[ImageRecord]) -> go.Figure:
    """UMAP scatter, one trace per k-means group; each point's customdata = [name, group, thumbnail URL].

    The custom HTML plot (``pss_app.scatter``) reads customdata for clicks, lasso and hover thumbnails.
    """
    thumbs = _hover_thumbs(ws, [r for r in records if r.name in set(grouping.names)])
    figure = go.Figure()
    for group in range(grouping.k):
        index = [i for i, g in enumerate(grouping.groups) if g == group]
        if not index:
            continue
        names = [grouping.names[i] for i in index]
        figure.add_trace(go.Scatter(
            x=grouping.embedding[index, 0].tolist(), y=grouping.embedding[index, 1].tolist(), mode="markers",
            name=f"group {group} ({len(index)})", marker=dict(size=8, color=_COLOURS[group % len(_COLOURS)]),
            customdata=[[name, group, thumbs.get(name, "")] for name in names],
            hovertemplate="%{customdata[0]}<br>group %{customdata[1]}<extra></extra>"))
    figure.update_layout(
        dragmode="lasso", height=520, margin=dict(l=10, r=10, t=40, b=10), showlegend=grouping.k <= MAX_LEGEND_GROUPS,
        legend=dict(orientation="h", x=0, y=-0.12, yanchor="top"),
        title=dict(text=f"{grouping.user}: {len(grouping.names)} images, k-means K={grouping.k} "
                        f"(asked {grouping.k_requested}), UMAP of {grouping.feature_model} features",
                   font=dict(size=13)),
        xaxis=dict(title="UMAP 1", zeroline=False), yaxis=dict(title="UMAP 2", zeroline=False),
        template="plotly_white", clickmode="event")
    return figure


@dataclass(frozen=True)
class Selection:
    """What the Groups gallery shows: a whole group, or the images picked with the lasso."""

    kind: str = "none"  # "none" | "group" | "lasso"
    group: int | None = None
    names: tuple[str, ...] = ()
    context: str = ""  # e.g. "id1/K8": group 0 of another user or K is another selection

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "group": self.group, "names": list(self.names),
                           "context": self.context})

    def describe(self) -> str:
        if self.kind == "group":
            return f"group {self.group}"
        if self.kind == "lasso":
            return f"lasso selection of {len(self.names)} images"
        return "nothing selected"


def parse_selection(text: str | None) -> Selection:
    """Inverse of ``Selection.to_json``; also accepts the plot's event payload ``{"index", "value"}``.

    Plot payloads: ``{"kind": "point", "group": g, "name": n}`` (a click picks the point's group) or
    ``{"kind": "lasso", "names": [...]}``. Anything malformed raises DatasetError.
    """
    if not text:
        return Selection()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"selection is not valid JSON: {exc}") from exc
    if isinstance(payload, dict) and "value" in payload and isinstance(payload["value"], dict):
        payload = payload["value"]
    if not isinstance(payload, dict):
        raise DatasetError("selection must be a JSON object")
    kind = payload.get("kind", "none")
    context = str(payload.get("context", ""))
    try:
        if kind in ("group", "point"):
            return Selection("group", int(payload["group"]), context=context)
        if kind == "lasso":
            return Selection("lasso", None, tuple(str(n) for n in payload.get("names", [])), context)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"malformed selection {payload!r}") from exc
    if kind == "none":
        return Selection(context=context)
    raise DatasetError(f"unknown selection kind {kind!r}")


def selected_names(selection: Selection, grouping) -> tuple[str, ...] | None:
    """Image names of a selection (``None`` = nothing selected)."""
    if selection.kind == "group":
        if grouping is None:
            raise DatasetError("no grouping yet; compute groups first")
        if selection.group is None:  # parse_selection always sets it; a hand-made Selection may not
            raise DatasetError("malformed selection: a group without its number; pick the group again")
        if not 0 <= int(selection.group) < grouping.k:
            raise DatasetError(f"group {selection.group} does not exist (K={grouping.k})")
        return tuple(grouping.members(int(selection.group)))
    if selection.kind == "lasso":
        return selection.names
    return None


def composition_figure(records: Sequence[ImageRecord], names: Sequence[str] | None, title: str) -> go.Figure:
    """Bars: share of the selected images tagged with each class, next to the share over all the user's images."""
    chosen = set(names) if names is not None else None
    subset = [r for r in records if chosen is None or r.name in chosen]
    classes = list(CLASS_NAMES[1:])
    figure = go.Figure()
    figure.add_bar(x=classes, y=(100 * class_histogram(records)[1:]).tolist(), name="all images",
                   marker_color="#c8c8c8")
    figure.add_bar(x=classes, y=(100 * class_histogram(subset)[1:]).tolist(), name=f"{title} ({len(subset)})",
                   marker_color="#1f77b4")
    figure.update_layout(barmode="group", height=330, margin=dict(l=10, r=10, t=70, b=10), template="plotly_white",
                         title=dict(text="Class composition (% of images tagged with each class)", font=dict(size=13)),
                         yaxis=dict(title="% images"), legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom",
                                                                   font=dict(size=11)))
    return figure


def grouping_status(user: str, grouping) -> str:
    """Status line for a grouping (or for its absence), naming skipped images."""
    if grouping is None:
        return (f"no grouping of {user} for this K yet: press **Compute groups** (features are cached, so "
                f"recomputing for another K is quick)")
    status = f"{user}: {len(grouping.names)} images in {grouping.k} groups"
    skipped = [f"{name}: {grouping.skip_reasons.get(name, 'unreadable')}" for name in grouping.skipped]
    if skipped:
        status += f"  \n⚠ {len(skipped)} image(s) skipped: " + "; ".join(skipped[:3])
    return status


def initial_selection(user: str, grouping) -> Selection:
    """The group shown right after a grouping is loaded: the first image's group (so the panel is not empty).

    ``context`` names the user, K and grouping key, so a new grouping is a new selection even for group 0.
    """
    if grouping is None or not grouping.names:
        return Selection(context=user)
    return Selection("group", int(grouping.groups[0]), context=f"{user}/K{grouping.k_requested}/{grouping.key[:8]}")


@dataclass
class SelectionView:
    """The Groups panel for a selection: a page of its images, a caption and the class-composition bars."""

    page: GalleryPage | None
    info: str
    figure: go.Figure | None


def selection_view(ws: Workspace, user: str, k: int, selection_json: str, page: float | int | None) -> SelectionView:
    """One page of the selected images (a group of the cached grouping at ``k``, or lasso-picked names)."""
    chosen = parse_selection(selection_json)
    grouping = cached_grouping(ws, user, int(k)) if chosen.kind == "group" else None
    wanted = selected_names(chosen, grouping)
    records = read_user(ws, user).records
    if wanted is None:
        return SelectionView(None, "Pick a group or lasso points in the plot.", None)
    result = page_of(filter_records(records, GalleryFilter(names=wanted)), ws, page)
    return SelectionView(result, f"**{chosen.describe()}** · {result.summary}",
                         composition_figure(records, wanted, chosen.describe()))
