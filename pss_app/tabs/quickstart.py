"""The quick-start banner above the tabs (layout and wiring only): one button trains the demo comparison of the user
(No-DA, ADVENT, OURS-S1, OURS-S2 through the job queue), with its estimate before and its progress after."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pss.api import Workspace
from pss_app.feedback import guarded
from pss_app.services import quickstart as svc

POLL_S = 2.0


@dataclass
class QuickstartBanner:
    open_compare: gr.Button  # its click also re-lists the Compare tab's runs


def _outputs(view: svc.QuickstartView) -> tuple:
    return (view.text, view.progress, gr.Button(value=view.button, interactive=view.can_start),
            gr.Button(visible=view.can_compare), gr.Timer(active=view.active), view.state, "")


def build(ws: Workspace, user: gr.Dropdown, status: gr.Markdown, load_trigger) -> QuickstartBanner:
    """Lay out the banner where it is called (above the tabs) and wire it; ``show_compare(tabs)`` wires "Open
    Compare" once the tabs exist."""
    with gr.Group(elem_id="quickstart"):
        with gr.Row(equal_height=True):
            text = gr.Markdown(elem_id="quickstart-text")
            with gr.Column(scale=0, min_width=300):
                start = gr.Button(svc.ACTION, variant="primary", elem_id="quickstart-start")
                open_compare = gr.Button("Open Compare", visible=False, elem_id="quickstart-compare")
        progress = gr.HTML(elem_id="quickstart-progress")
        state = gr.JSON(visible=False, elem_id="quickstart-state")
    timer = gr.Timer(POLL_S, active=False)
    outputs = [text, progress, start, open_compare, timer, state, status]

    @guarded(len(outputs))
    def show(user_name: str | None):
        return _outputs(svc.banner(ws, user_name))

    @guarded(len(outputs))
    def launch(user_name: str | None):
        return _outputs(svc.start(ws, user_name))

    load_trigger(show, user, outputs, api_name="quickstart_view")
    user.change(show, user, outputs, api_visibility="private")
    timer.tick(show, user, outputs, api_visibility="private", show_progress="hidden")
    start.click(launch, user, outputs, api_name="quickstart_start")
    return QuickstartBanner(open_compare)


def show_compare(banner: QuickstartBanner, tabs: gr.Tabs) -> None:
    """"Open Compare" switches to the Compare tab (which re-lists its runs on the same click)."""
    banner.open_compare.click(lambda: gr.Tabs(selected="compare"), None, tabs, api_visibility="private")
