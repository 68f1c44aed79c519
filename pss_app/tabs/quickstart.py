"""The quick-start banner above the tabs (layout and wiring only): one button trains the demo comparison of the user
(No-DA, ADVENT, OURS-S1, OURS-S2 through the job queue), with its estimate before and its progress after."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pss_app.feedback import guarded
from pss_app.services import quickstart as svc
from pss_app.tabs.context import TabContext

POLL_S = 2.0


@dataclass
class QuickstartBanner:
    open_compare: gr.Button  # its click also re-lists the Compare tab's runs


def _outputs(view: svc.QuickstartView) -> tuple:
    return (view.text, view.progress, gr.Button(value=view.button, interactive=view.can_start),
            gr.Button(visible=view.can_compare), gr.Timer(active=view.active), view.state, "")


def build(ctx: TabContext) -> None:
    """Lay out the banner where it is called (above the tabs) and wire it; publishes ``ctx.banner`` (the Compare
    tab re-lists its runs on "Open Compare"). ``show_compare(ctx)`` wires the tab switch once the tabs exist."""
    ws, user = ctx.ws, ctx.user
    with gr.Group(elem_id="quickstart"):
        with gr.Row(equal_height=True):
            text = gr.Markdown(elem_id="quickstart-text")
            with gr.Column(scale=0, min_width=300):
                start = gr.Button(svc.ACTION, variant="primary", elem_id="quickstart-start")
                open_compare = gr.Button("Open Compare", visible=False, elem_id="quickstart-compare")
        progress = gr.HTML(elem_id="quickstart-progress")
        state = gr.JSON(visible=False, elem_id="quickstart-state")
    timer = gr.Timer(POLL_S, active=False)
    outputs = [text, progress, start, open_compare, timer, state, ctx.status]

    @guarded(len(outputs))
    def show(user_name: str | None):
        return _outputs(svc.banner(ws, user_name))

    @guarded(len(outputs))
    def launch(user_name: str | None):
        return _outputs(svc.start(ws, user_name))

    ctx.load(show, user, outputs, api_name="quickstart_view")
    user.change(show, user, outputs, api_visibility="private")
    timer.tick(show, user, outputs, api_visibility="private", show_progress="hidden")
    start.click(launch, user, outputs, api_name="quickstart_start")
    ctx.banner = QuickstartBanner(open_compare)


def show_compare(ctx: TabContext) -> None:
    """"Open Compare" switches to the Compare tab (which re-lists its runs on the same click)."""
    banner: QuickstartBanner = ctx.published("banner")
    banner.open_compare.click(lambda: gr.Tabs(selected="compare"), None, ctx.published("tabs"),
                              api_visibility="private")
