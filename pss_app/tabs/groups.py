"""Groups tab (layout and wiring only): UMAP scatter by k-means group, group/lasso selection, its images."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from pss.api import Workspace, cached_grouping, compute_grouping
from pss_app.feedback import guarded, problem, problems_text
from pss_app.scatter import scatter_component
from pss_app.services.collection import collection
from pss_app.services.gallery import GalleryFilter, filter_records, page_of
from pss_app.services.groups import (Selection, composition_figure, group_choices, parse_group, parse_selection,
                                     scatter_figure, selected_names)
from pss_app.tabs.images import ImagesTab
from pss_app.tabs.widgets import pager


def _grouping_outputs(ws: Workspace, user: str, grouping) -> tuple:
    """(scatter JSON, group dropdown, images-tab group dropdown, reset selection, status) for a grouping."""
    if grouping is None:
        message = (f"no grouping of {user} for this K yet: press **Compute groups** (features are cached, "
                   f"so recomputing for another K is quick)")
        return "", gr.Dropdown(choices=[], value=None), gr.Dropdown(choices=group_choices(None, True), value="all"), \
            Selection(context=user).to_json(), message
    records = collection(ws, user).records
    figure = scatter_figure(ws, grouping, records)
    skipped = [f"{name}: {grouping.skip_reasons.get(name, 'unreadable')}" for name in grouping.skipped]
    status = f"{user}: {len(grouping.names)} images in {grouping.k} groups"
    if skipped:
        status += "  \n" + problems_text(skipped)
    first = int(grouping.groups[0]) if len(grouping.names) else None  # show a group right away, not an empty panel
    context = f"{user}/K{grouping.k_requested}/{grouping.key[:8]}"
    selection = Selection("group", first, context=context) if first is not None else Selection(context=context)
    return (figure.to_json(), gr.Dropdown(choices=group_choices(grouping), value=None if first is None else str(first)),
            gr.Dropdown(choices=group_choices(grouping, True), value="all"), selection.to_json(), status)


def build(ws: Workspace, plotly_js: Path, user: gr.Dropdown, k: gr.Slider, status: gr.Markdown,
          images: ImagesTab, tabs: gr.Tabs, load_trigger) -> None:
    """Lay out the tab inside the current ``gr.Tab`` and wire its events."""
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
    selection = gr.Textbox(visible=False, elem_id="groups-selection")
    names = gr.State([])

    grouping_outputs = [scatter, group, images.group, selection, status]

    @guarded(len(grouping_outputs))
    def load_groups(user_name: str, k_value: float):
        if not user_name:
            return _grouping_outputs(ws, user_name, None)
        return _grouping_outputs(ws, user_name, cached_grouping(ws, user_name, int(k_value)))

    @guarded(len(grouping_outputs))
    def compute_groups(user_name: str, k_value: float, progress=gr.Progress()):
        report = lambda fraction, message: progress(fraction, desc=message)  # noqa: E731
        grouping = compute_grouping(ws, user_name, int(k_value), progress=report)
        return _grouping_outputs(ws, user_name, grouping)

    gr.on([load_trigger, user.change, k.release], load_groups, [user, k], grouping_outputs, api_name="load_groups",
          trigger_mode="multiple")
    compute.click(compute_groups, [user, k], grouping_outputs, api_name="compute_groups")

    @guarded(1)
    def pick_group(user_name: str, k_value: float, value: str) -> str:
        group_id = parse_group(value)
        context = f"{user_name}/K{int(k_value)}"
        return Selection("group", group_id, context=context).to_json() if group_id is not None \
            else Selection(context=context).to_json()

    group.input(pick_group, [user, k, group], selection, api_name="pick_group",
          trigger_mode="multiple")

    @guarded(1)
    def plot_selection(user_name: str, k_value: float, evt: gr.EventData) -> str:
        data = getattr(evt, "_data", None) or {}
        chosen = parse_selection(json.dumps(data))
        return Selection(chosen.kind, chosen.group, chosen.names, f"{user_name}/K{int(k_value)}").to_json()

    scatter.select(plot_selection, [user, k], selection, api_name="plot_selection",
          trigger_mode="multiple")

    page_outputs = [gallery, page, selection_info, composition, names, status]

    @guarded(len(page_outputs))
    def selection_page(user_name: str, k_value: float, selection_json: str, page_value: float):
        chosen = parse_selection(selection_json)
        grouping = cached_grouping(ws, user_name, int(k_value)) if chosen.kind == "group" else None
        wanted = selected_names(chosen, grouping)
        records = collection(ws, user_name).records
        if wanted is None:
            return [], 1, "Pick a group or lasso points in the plot.", None, [], ""
        result = page_of(filter_records(records, GalleryFilter(names=wanted)), ws, page_value)
        if result.problems:
            problem(problems_text(result.problems))
        info = f"**{chosen.describe()}** · {result.summary}"
        figure = composition_figure(records, wanted, chosen.describe())
        return result.items, result.page, info, figure, result.names, problems_text(result.problems)

    selection.change(lambda *args: selection_page(*args, 1), [user, k, selection], page_outputs,
                     api_name="selection_page",
          trigger_mode="multiple")
    page.submit(selection_page, [user, k, selection, page], page_outputs, api_name="selection_goto_page")
    prev.click(lambda *args: selection_page(*args[:-1], (args[-1] or 1) - 1), [user, k, selection, page],
               page_outputs, api_name="selection_previous")
    nxt.click(lambda *args: selection_page(*args[:-1], (args[-1] or 1) + 1), [user, k, selection, page],
              page_outputs, api_name="selection_next")

    def open_in_images(page_names: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(page_names):
            return gr.skip(), gr.skip()
        return page_names[index], gr.Tabs(selected="images")

    gallery.select(open_in_images, names, [images.name, tabs], api_visibility="private")
