"""Images tab (layout and wiring only): filters, the paged thumbnail gallery, one image with its GT overlay."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pss.api import cached_grouping
from pss_app.feedback import guarded, problem, problems_text
from pss_app.services.gallery import ALL, LABELLED_CHOICES, gallery_page, make_filter, tag_choices
from pss_app.services.groups import group_choices
from pss_app.services.viewer import has_image, image_view
from pss_app.tabs.context import TabContext, tab_page
from pss_app.tabs.widgets import pager


@dataclass
class ImagesTab:
    """Components other tabs wire into: ``name`` opens an image, ``group`` filters by group."""

    name: gr.Textbox
    group: gr.Dropdown


@dataclass
class _Widgets:
    tag: gr.Dropdown
    group: gr.Dropdown
    labelled: gr.Radio
    gallery: gr.Gallery
    prev: gr.Button
    page: gr.Number
    nxt: gr.Button
    info: gr.Markdown
    name: gr.Textbox
    view: gr.Image
    opacity: gr.Slider
    details: gr.Markdown
    legend: gr.HTML
    names: gr.State


def _layout() -> _Widgets:
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
            # PNG file paths + format="png": the browser gets the exact overlay pixels (default is lossy webp)
            view = gr.Image(label="Image with GT overlay", type="filepath", format="png", interactive=False,
                            height=420, elem_id="image-view")
            opacity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Mask opacity", elem_id="image-opacity")
            details = gr.Markdown(elem_id="image-details")
            legend = gr.HTML(elem_id="image-legend")
    return _Widgets(tag, group, labelled, gallery, prev, page, nxt, info, name, view, opacity, details, legend,
                    gr.State([]))


def _wire_gallery(ctx: TabContext, w: _Widgets) -> None:
    ws, user, k = ctx.ws, ctx.user, ctx.k
    outputs = [w.gallery, w.page, w.info, w.names, ctx.status]

    @guarded(len(outputs))
    def show_page(user_name: str, k_value: float, tag: str, group: str, labelled: str, page: float):
        result = gallery_page(ws, user_name, page, make_filter(ws, user_name, k_value, tag, group, labelled))
        if result.problems:
            problem(problems_text(result.problems))
        return result.items, result.page, result.summary, result.names, problems_text(result.problems)

    filters = [user, k, w.tag, w.group, w.labelled]
    # trigger_mode="multiple": every trigger runs, in order (idempotent handlers). "always_last" was seen to
    # re-trigger user.change's listeners endlessly when two triggers overlapped (gradio 6.31).
    gr.on([ctx.load, user.change, w.tag.change, w.group.change, w.labelled.change],
          lambda *args: show_page(*args, 1), filters, outputs, api_name="gallery_first_page", trigger_mode="multiple")
    w.page.submit(show_page, [*filters, w.page], outputs, api_name="gallery_page")
    w.prev.click(lambda *args: show_page(*args[:-1], (args[-1] or 1) - 1), [*filters, w.page], outputs,
                 api_name="gallery_previous")
    w.nxt.click(lambda *args: show_page(*args[:-1], (args[-1] or 1) + 1), [*filters, w.page], outputs,
                api_name="gallery_next")

    @guarded(2)
    def group_filter_choices(user_name: str, k_value: float):
        grouping = cached_grouping(ws, user_name, int(k_value)) if user_name else None
        return gr.Dropdown(choices=group_choices(grouping, include_all=True), value=ALL), ""

    gr.on([ctx.load, user.change, k.release], group_filter_choices, [user, k], [w.group, ctx.status],
          api_name="group_filter_choices", trigger_mode="multiple")


def _wire_viewer(ctx: TabContext, w: _Widgets) -> None:
    ws, user = ctx.ws, ctx.user

    def pick(page_names: list[str], evt: gr.SelectData) -> str:
        index = evt.index if isinstance(evt.index, int) else 0
        return page_names[index] if 0 <= index < len(page_names) else ""

    w.gallery.select(pick, w.names, w.name, api_visibility="private")
    outputs = [w.view, w.details, w.legend, ctx.status]

    @guarded(len(outputs))
    def show_image(user_name: str, image_name: str, opacity: float):
        if not image_name:
            return None, "", "", ""  # nothing open
        result = image_view(ws, user_name, image_name, opacity)  # an unknown name: DatasetError naming it
        if result.message:
            problem(result.message)
        return str(result.path), result.tags_markdown(), result.legend_html(), result.message

    @guarded(len(outputs))
    def follow_user(user_name: str, image_name: str, opacity: float):
        if image_name and not has_image(ws, user_name, image_name):
            return None, "", "", ""  # the open image belonged to the previous user: close it, no warning
        return show_image(user_name, image_name, opacity)

    gr.on([w.name.change, w.opacity.release], show_image, [user, w.name, w.opacity], outputs,
          api_name="image_view", trigger_mode="multiple")
    # user.change can fire twice for one pick (select, then blur): every handler here is idempotent
    user.change(follow_user, [user, w.name, w.opacity], outputs, trigger_mode="multiple", api_visibility="private")


def build(ctx: TabContext) -> None:
    """Lay out the "Images" tab and wire its events; publishes ``ctx.images`` (for the Groups tab)."""
    with tab_page("Images", "images"):
        widgets = _layout()
        _wire_gallery(ctx, widgets)
        _wire_viewer(ctx, widgets)
    ctx.images = ImagesTab(name=widgets.name, group=widgets.group)
