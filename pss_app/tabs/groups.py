"""Groups tab (layout and wiring only): UMAP scatter by k-means group, group/lasso selection, its images."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pss.api import Workspace, cached_grouping, compute_grouping
from pss.api import read_user as collection  # the one cached user reader (pss.api.users)
from pss_app.feedback import guarded, problem, problems_text
from pss_app.scatter import scatter_component
from pss_app.services.groups import (Selection, group_choices, grouping_status, initial_selection, parse_group,
                                     parse_selection, scatter_figure, selection_view)
from pss_app.tabs.context import TabContext, tab_page
from pss_app.tabs.images import ImagesTab
from pss_app.tabs.widgets import pager


@dataclass
class _Widgets:
    compute: gr.Button
    group: gr.Dropdown
    scatter: gr.HTML
    selection_info: gr.Markdown
    composition: gr.Plot
    gallery: gr.Gallery
    prev: gr.Button
    page: gr.Number
    nxt: gr.Button
    selection: gr.Textbox
    names: gr.State


def _layout(plotly_js: Path) -> _Widgets:
    with gr.Row():
        compute = gr.Button("Compute groups", variant="primary", elem_id="groups-compute")
        group = gr.Dropdown([], label="Group", elem_id="groups-group")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            scatter = scatter_component(plotly_js, elem_id="groups-scatter")
            gr.Markdown("Click a point to pick its group; drag a lasso (or box) around points to pick them. "
                        "Hover shows the image.")
        with gr.Column(scale=2):
            selection_info = gr.Markdown(elem_id="groups-selection-info")
            composition = gr.Plot(show_label=False, elem_id="groups-composition")
            gallery = gr.Gallery(label="Selected images", columns=4, height=300, allow_preview=False,
                                 object_fit="cover", elem_id="groups-gallery")
            prev, page, nxt = pager("groups")
    # The selection (a group or lasso-picked names) as JSON: one place every way of selecting writes to.
    selection = gr.Textbox(visible=False, elem_id="groups-selection")
    return _Widgets(compute, group, scatter, selection_info, composition, gallery, prev, page, nxt, selection,
                    gr.State([]))


def _grouping_outputs(ws: Workspace, user: str, grouping) -> tuple:
    """(scatter JSON, group dropdown, Images-tab group dropdown, selection, status) for a grouping or None."""
    selection = initial_selection(user, grouping)
    figure = scatter_figure(ws, grouping, collection(ws, user).records).to_json() if grouping is not None else ""
    first = None if selection.group is None else str(selection.group)
    return (figure, gr.Dropdown(choices=group_choices(grouping), value=first),
            gr.Dropdown(choices=group_choices(grouping, include_all=True), value="all"), selection.to_json(),
            grouping_status(user, grouping))


def _wire_grouping(ctx: TabContext, w: _Widgets, images: ImagesTab) -> None:
    ws, user, k = ctx.ws, ctx.user, ctx.k
    outputs = [w.scatter, w.group, images.group, w.selection, ctx.status]

    @guarded(len(outputs))
    def load_groups(user_name: str, k_value: float):
        grouping = cached_grouping(ws, user_name, int(k_value)) if user_name else None
        return _grouping_outputs(ws, user_name, grouping)

    @guarded(len(outputs))
    # a gr.Progress() default is how Gradio hands a handler its progress tracker (documented usage)
    def compute_groups(user_name: str, k_value: float, progress=gr.Progress()):  # noqa: B008
        report = lambda fraction, message: progress(fraction, desc=message)  # noqa: E731
        return _grouping_outputs(ws, user_name, compute_grouping(ws, user_name, int(k_value), progress=report))

    gr.on([ctx.load, user.change, k.release], load_groups, [user, k], outputs, api_name="load_groups",
          trigger_mode="multiple")
    w.compute.click(compute_groups, [user, k], outputs, api_name="compute_groups")

    # Picking writes the selection (JSON) and the status line: a bad pick's warning goes to the line every tab uses
    # (not into the hidden selection box, where the page never showed it and ``show`` could not parse it), and
    # the selection is left as it was.
    picked = [w.selection, ctx.status]

    @guarded(len(picked))
    def pick_group(user_name: str, k_value: float, value: str) -> tuple[str, str]:
        group_id = parse_group(value)
        return Selection("group" if group_id is not None else "none", group_id,
                         context=f"{user_name}/K{int(k_value)}").to_json(), ""

    w.group.input(pick_group, [user, k, w.group], picked, api_name="pick_group", trigger_mode="multiple")

    @guarded(len(picked))
    def plot_selection(user_name: str, k_value: float, evt: gr.EventData) -> tuple[str, str]:
        chosen = parse_selection(json.dumps(getattr(evt, "_data", None) or {}))
        return Selection(chosen.kind, chosen.group, chosen.names, f"{user_name}/K{int(k_value)}").to_json(), ""

    w.scatter.select(plot_selection, [user, k], picked, api_name="plot_selection", trigger_mode="multiple")


def _wire_selection(ctx: TabContext, w: _Widgets, images: ImagesTab) -> None:
    ws, user, k, tabs = ctx.ws, ctx.user, ctx.k, ctx.published("tabs")
    outputs = [w.gallery, w.page, w.selection_info, w.composition, w.names, ctx.status]

    @guarded(len(outputs))
    def show(user_name: str, k_value: float, selection_json: str, page: float):
        view = selection_view(ws, user_name, int(k_value), selection_json, page)
        if view.page is None:
            return [], 1, view.info, None, [], ""
        if view.page.problems:
            problem(problems_text(view.page.problems))
        return (view.page.items, view.page.page, view.info, view.figure, view.page.names,
                problems_text(view.page.problems))

    inputs = [user, k, w.selection, w.page]
    w.selection.change(lambda *args: show(*args, 1), inputs[:3], outputs, api_name="selection_page",
                       trigger_mode="multiple")
    w.page.submit(show, inputs, outputs, api_name="selection_goto_page")
    w.prev.click(lambda *args: show(*args[:-1], (args[-1] or 1) - 1), inputs, outputs, api_name="selection_previous")
    w.nxt.click(lambda *args: show(*args[:-1], (args[-1] or 1) + 1), inputs, outputs, api_name="selection_next")

    def open_in_images(page_names: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(page_names):
            return gr.skip(), gr.skip()
        return page_names[index], gr.Tabs(selected="images")

    w.gallery.select(open_in_images, w.names, [images.name, tabs], api_visibility="private")


def build(ctx: TabContext) -> None:
    """Lay out the "Groups" tab and wire its events (after the Images tab: a clicked image opens there)."""
    images: ImagesTab = ctx.published("images")
    with tab_page("Groups", "groups"):
        widgets = _layout(ctx.plotly_js)
        _wire_grouping(ctx, widgets, images)
        _wire_selection(ctx, widgets, images)
