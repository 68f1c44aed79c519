"""Inspect tab (layout and wiring only): one image under one finished run — prediction, entropy, pseudo label,
and, for a clicked pixel, its class probabilities and the group regions it attends to; for a weak-supervision run,
what each of its stages made of the image (CAMs, saliency, EPS / refined masks, L-Net's maps, pixel affinities)."""
from __future__ import annotations

import json

import gradio as gr

from pss.api.maps import DisplaySize
from pss_app.feedback import guarded
from pss_app.services.quickstart import empty_state
from pss_app.services.inspect import (ATTENTION_COLUMNS, image_choices, inspect_view, pixel_view, run_choices,
                                      to_image_pixel)
from pss_app.services.weak import EMPTY_LABELS, weak_pixel, weak_section
from pss_app.tabs.context import TabContext, tab_page


def clicked_pixel(size_json: str, evt: gr.SelectData):
    """A click on a displayed map (``evt.index`` = display pixel) -> (x, y) image pixel; the display size comes as
    JSON from the view that drew the map (DisplaySize + the image's size)."""
    if not size_json or not isinstance(evt.index, (list, tuple)) or len(evt.index) != 2:
        return gr.skip(), gr.skip()
    size = json.loads(size_json)
    shown = DisplaySize(size["width"], size["height"], size["scale"])
    return to_image_pixel(evt.index[0], evt.index[1], shown, size["image_width"], size["image_height"])


def click_handler():
    """A new function object for each listener: Gradio keys an event's concurrency group and handling on its
    function, and the prediction's click never answered (browser test) when the weak stage maps' listener shared
    the one ``clicked_pixel``."""
    def clicked(size_json: str, evt: gr.SelectData):
        return clicked_pixel(size_json, evt)
    return clicked


def _dropdown(choices: list[tuple[str, str]], current: str | None) -> gr.Dropdown:
    values = [value for _, value in choices]
    return gr.Dropdown(choices=choices, value=current if current in values else (values[0] if values else None))


def build(ctx: TabContext) -> None:
    """Lay out the "Inspect" tab and wire its events; opening the tab re-lists the user's runs."""
    with tab_page("Inspect", "inspect") as page:
        _body(ctx, [page.select])


def _body(ctx: TabContext, refresh_triggers: list) -> None:
    """The tab's layout and events; ``refresh_triggers`` re-list the user's runs and images."""
    ws, user, status = ctx.ws, ctx.user, ctx.status
    empty = gr.Markdown(elem_id="inspect-empty")
    with gr.Row():
        run = gr.Dropdown([], label="Run (finished runs of the user)", scale=3, elem_id="inspect-run",
                          allow_custom_value=True)  # runs come and go; the services check the id
        image = gr.Dropdown([], label="Image", scale=2, elem_id="inspect-image", allow_custom_value=True)
        opacity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Prediction opacity", scale=1,
                            elem_id="inspect-opacity")
        stretch = gr.Checkbox(False, label="Stretch entropy colours to this image", scale=1, elem_id="inspect-stretch")
    summary = gr.Markdown(elem_id="inspect-summary")
    with gr.Row(equal_height=False):
        with gr.Column():
            prediction = gr.Image(label="Prediction (click a pixel)", type="filepath", format="png",
                                  interactive=False, elem_id="inspect-prediction")
            legend = gr.HTML(elem_id="inspect-legend")
        with gr.Column():
            entropy = gr.Image(label="Pixel entropy (normalised, ADVENT eq. 2 / log C)", type="filepath",
                               format="png", interactive=False, elem_id="inspect-entropy")
        with gr.Column():
            pseudo = gr.Image(label="Step-2 pseudo label (hatched = ignored, 255)", type="filepath", format="png",
                              interactive=False, elem_id="inspect-pseudo")
            pseudo_info = gr.Markdown(elem_id="inspect-pseudo-info")
        with gr.Column():
            # the image's mask, captioned with what it is: scored ground truth or a training annotation (unscored)
            mask = gr.Image(label="Mask", type="filepath", format="png", interactive=False, elem_id="inspect-mask")
    note = gr.Markdown(elem_id="inspect-note")
    with gr.Row(equal_height=True):
        x = gr.Number(None, label="x (image pixel)", precision=0, minimum=0, scale=1, elem_id="inspect-x")
        y = gr.Number(None, label="y (image pixel)", precision=0, minimum=0, scale=1, elem_id="inspect-y")
        go = gr.Button("Inspect pixel", scale=1, elem_id="inspect-go")
    pixel_heading = gr.Markdown(elem_id="inspect-pixel")
    with gr.Row(equal_height=False):
        probabilities = gr.Label(label="Class probabilities at the pixel", num_top_classes=5, scale=1,
                                 elem_id="inspect-probabilities")
        attention = gr.Dataframe(headers=ATTENTION_COLUMNS, label="Group regions it attends to (image × class)",
                                 interactive=False, scale=2, elem_id="inspect-attention")
        regions = gr.Gallery(label="Soft masks of the top regions (eq. 4)", columns=3, height=300,
                             object_fit="contain", scale=2, elem_id="inspect-regions")
    display = gr.State("")  # JSON of the shown maps' size: clicks arrive in display pixels

    @guarded(3)
    def choices(user_name: str, run_value: str | None, image_value: str | None):
        return (_dropdown(run_choices(ws, user_name), run_value), _dropdown(image_choices(ws, user_name), image_value),
                "")

    gr.on(list(refresh_triggers), choices, [user, run, image], [run, image, status], api_name="inspect_choices")

    @guarded(2)
    def explain(user_name: str):
        """While the user has no finished run: what this tab needs and the action that trains it."""
        return empty_state(ws, user_name, "inspect", len(run_choices(ws, user_name)) if user_name else 0), ""

    gr.on([*refresh_triggers, user.change], explain, user, [empty, status], api_name="inspect_empty_state",
          show_progress="hidden")  # no progress timer flashing in the hint box

    @guarded(3)
    def other_user(user_name: str):
        """Another user: list its runs and images but pick none (picking would run a model on a hidden tab)."""
        return (gr.Dropdown(choices=run_choices(ws, user_name), value=None),
                gr.Dropdown(choices=image_choices(ws, user_name), value=None), "")

    user.change(other_user, user, [run, image, status], api_visibility="private")

    view_outputs = [prediction, entropy, pseudo, summary, pseudo_info, legend, note, mask, display, status]

    @guarded(len(view_outputs))
    def show(run_id: str, name: str, opacity_value: float, stretch_value: bool):
        if not run_id or not name:
            return None, None, None, "", "", "", "", gr.Image(value=None, label="Mask"), "", ""
        view = inspect_view(ws, run_id, name, opacity_value, stretch_value)
        m = view.maps
        size = json.dumps({"width": m.display.width, "height": m.display.height, "scale": m.display.scale,
                           "image_width": m.width, "image_height": m.height})
        shown_mask = gr.Image(value=str(m.mask) if m.mask else None,
                              label=f"Mask: {m.mask_role}" if m.mask_role else "Mask: none (unlabelled image)")
        return (str(m.prediction), str(m.entropy), str(m.pseudo_label), view.summary, view.pseudo, view.legend,
                view.attention_note, shown_mask, size, "")

    gr.on([run.change, image.change, opacity.release, stretch.change], show, [run, image, opacity, stretch],
          view_outputs, api_name="inspect_view")

    pixel_outputs = [prediction, pixel_heading, probabilities, attention, regions, status]

    @guarded(len(pixel_outputs))
    def show_pixel(run_id: str, name: str, x_value: float, y_value: float, opacity_value: float):
        view = pixel_view(ws, run_id, name, x_value, y_value, opacity_value)
        rows = view.attention_rows or [["", "no group context in this run's model", "", ""]]
        return (str(view.marked), view.heading, view.probabilities, rows, view.region_gallery, "")

    pixel_inputs = [run, image, x, y, opacity]
    go.click(show_pixel, pixel_inputs, pixel_outputs, api_name="inspect_pixel")
    x.submit(show_pixel, pixel_inputs, pixel_outputs, api_visibility="private")
    y.submit(show_pixel, pixel_inputs, pixel_outputs, api_visibility="private")

    prediction.select(click_handler(), display, [x, y], api_visibility="private").then(
        show_pixel, pixel_inputs, pixel_outputs, api_visibility="private")

    _weak_section(ctx, run, image)


def _weak_section(ctx: TabContext, run: gr.Dropdown, image: gr.Dropdown) -> None:
    """The weak-supervision runs' stages for the chosen run and image (issues 17, 18)."""
    ws, status = ctx.ws, ctx.status
    with gr.Accordion("Weak-supervision stages (EPS / AffinityNet / transfer runs)", open=True,
                      elem_id="inspect-weak"):
        weak_source = gr.Dropdown([], label="Source image (a transfer run's maps are of its split's source images)",
                                  visible=False, allow_custom_value=True, elem_id="inspect-weak-source")
        weak_info = gr.Markdown(elem_id="inspect-weak-info")
        with gr.Row(equal_height=False):
            # one row: the gallery's cells are squares as wide as its width over its item count, so a quarter of
            # the row keeps a few CAMs whole at this height
            cams = gr.Gallery(label="CAM of each tagged class", columns=4, height=280, object_fit="contain",
                              scale=1, elem_id="inspect-weak-cams")
            panels = [gr.Image(label=label, type="filepath", format="png", interactive=False, scale=1,
                               elem_id=f"inspect-weak-panel{i}") for i, label in enumerate(EMPTY_LABELS)]
        weak_note = gr.Markdown(elem_id="inspect-weak-note")
        with gr.Row(equal_height=True):
            wx = gr.Number(None, label="x (image pixel)", precision=0, minimum=0, scale=1, elem_id="inspect-weak-x")
            wy = gr.Number(None, label="y (image pixel)", precision=0, minimum=0, scale=1, elem_id="inspect-weak-y")
            weak_go = gr.Button("Pixel affinities", scale=1, elem_id="inspect-weak-go")
        affinity = gr.Image(label="Affinities to the neighbours within radius 5 (stride-8 grid)", type="filepath",
                            format="png", interactive=False, elem_id="inspect-weak-affinity")
        affinity_info = gr.Markdown(elem_id="inspect-weak-pixel")
    weak_display = gr.State("")

    weak_outputs = [weak_info, cams, *panels, weak_note, weak_source, weak_display, affinity, affinity_info, status]

    @guarded(len(weak_outputs))
    def show_weak(run_id: str | None, name: str | None, source: str | None):
        section = weak_section(ws, run_id, name, source)
        shown = [gr.Image(value=path, label=label) for path, label in section.panels]
        sources = gr.Dropdown(choices=section.sources, value=section.source, visible=bool(section.sources))
        # a heat map left from the last pixel belongs to another run or image: cleared
        return (section.info, section.cams, *shown, section.pixel_note, sources, section.display, None, "", "")

    gr.on([run.change, image.change, weak_source.change], show_weak, [run, image, weak_source], weak_outputs,
          api_name="inspect_weak")

    pixel_outputs = [affinity, affinity_info, status]

    @guarded(len(pixel_outputs))
    def show_affinity(run_id: str | None, name: str | None, x_value: float | None, y_value: float | None):
        result = weak_pixel(ws, run_id, name, x_value, y_value)
        return result.heat, result.text, ""

    weak_go.click(show_affinity, [run, image, wx, wy], pixel_outputs, api_name="inspect_weak_pixel")

    for panel in panels:
        panel.select(click_handler(), weak_display, [wx, wy], api_visibility="private").then(
            show_affinity, [run, image, wx, wy], pixel_outputs, api_visibility="private")
