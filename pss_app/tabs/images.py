"""Images tab (layout and wiring only): filters, the paged thumbnail gallery, one image with its GT overlay."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pss.api import Workspace, cached_grouping
from pss_app.feedback import guarded, problem, problems_text
from pss_app.services.gallery import ALL, LABELLED_CHOICES, GalleryFilter, gallery_page, group_names, tag_choices
from pss_app.services.groups import group_choices, parse_group
from pss_app.services.viewer import has_image, image_view
from pss_app.tabs.widgets import pager


@dataclass
class ImagesTab:
    """Components other tabs wire into: ``name`` opens an image, ``group`` filters by group."""

    name: gr.Textbox
    group: gr.Dropdown


def _filter(ws: Workspace, user: str, k: float, tag: str, group: str, labelled: str) -> GalleryFilter:
    group_id = parse_group(group)
    names = None
    if group_id is not None:
        grouping = cached_grouping(ws, user, int(k))
        names = group_names(grouping.as_mapping() if grouping else None, group_id)
    return GalleryFilter(tag=tag or ALL, labelled=labelled or ALL, names=names)


def build(ws: Workspace, user: gr.Dropdown, k: gr.Slider, status: gr.Markdown, load_trigger) -> ImagesTab:
    """Lay out the tab inside the current ``gr.Tab`` and wire its events."""
    with gr.Row():
        tag = gr.Dropdown(tag_choices(), value=ALL, label="Tag", elem_id="images-tag")
        group = gr.Dropdown([("all groups", ALL)], value=ALL, label="Group (of the K above)", elem_id="images-group")
        labelled = gr.Radio(list(LABELLED_CHOICES), value=ALL, label="GT mask", elem_id="images-labelled")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Images", show_label=False, columns=6, height=560, allow_preview=False,
                                 object_fit="cover", elem_id="images-gallery")
            prev, page, nxt = pager("images")
            info = gr.Markdown(elem_id="images-info")
        with gr.Column(scale=2):
            name = gr.Textbox(label="Open image", placeholder="click a thumbnail", interactive=False,
                              elem_id="image-name")
            view = gr.Image(label="Image with GT overlay", type="filepath", format="png", interactive=False,
                            height=420, elem_id="image-view")
            opacity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Mask opacity", elem_id="image-opacity")
            details = gr.Markdown(elem_id="image-details")
            legend = gr.HTML(elem_id="image-legend")
    names = gr.State([])

    page_outputs = [gallery, page, info, names, status]

    @guarded(len(page_outputs))
    def show_page(user_name: str, k_value: float, tag_value: str, group_value: str, labelled_value: str,
                  page_value: float):
        flt = _filter(ws, user_name, k_value, tag_value, group_value, labelled_value)
        result = gallery_page(ws, user_name, page_value, flt)
        if result.problems:
            problem(problems_text(result.problems))
        return result.items, result.page, result.summary, result.names, problems_text(result.problems)

    filters = [user, k, tag, group, labelled]
    gr.on([load_trigger, user.change, tag.change, group.change, labelled.change],
          lambda *args: show_page(*args, 1), filters, page_outputs, api_name="gallery_first_page",
          trigger_mode="multiple")
    page.submit(show_page, [*filters, page], page_outputs, api_name="gallery_page")
    prev.click(lambda *args: show_page(*args[:-1], (args[-1] or 1) - 1), [*filters, page], page_outputs,
               api_name="gallery_previous")
    nxt.click(lambda *args: show_page(*args[:-1], (args[-1] or 1) + 1), [*filters, page], page_outputs,
              api_name="gallery_next")

    @guarded(2)
    def group_filter_choices(user_name: str, k_value: float):
        grouping = cached_grouping(ws, user_name, int(k_value)) if user_name else None
        return gr.Dropdown(choices=group_choices(grouping, include_all=True), value=ALL), ""

    gr.on([load_trigger, user.change, k.release], group_filter_choices, [user, k], [group, status],
          api_name="group_filter_choices",
          trigger_mode="multiple")

    def pick(page_names: list[str], evt: gr.SelectData) -> str:
        index = evt.index if isinstance(evt.index, int) else 0
        return page_names[index] if 0 <= index < len(page_names) else ""

    gallery.select(pick, names, name, api_visibility="private")

    view_outputs = [view, details, legend, status]

    @guarded(len(view_outputs))
    def show_image(user_name: str, image_name: str, opacity_value: float):
        if not image_name or not has_image(ws, user_name, image_name):
            return None, "", "", ""  # nothing open, or the open image belonged to the previous user
        result = image_view(ws, user_name, image_name, opacity_value)
        if result.message:
            problem(result.message)
        return str(result.path), result.tags_markdown(), result.legend_html(), result.message

    # user.change can fire twice for one pick (select, then blur): every handler here is idempotent
    gr.on([name.change, opacity.release, user.change], show_image, [user, name, opacity], view_outputs,
          api_name="image_view", trigger_mode="multiple")
    return ImagesTab(name=name, group=group)
