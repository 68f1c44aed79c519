"""Statistics tab (layout and wiring only): the paper's Fig. 2 for all users or one."""
from __future__ import annotations

import gradio as gr

from pss_app.feedback import guarded
from pss_app.services.statistics import ALL_USERS, scope_choices, statistics_figures
from pss_app.tabs.context import TabContext, tab_page


def build(ctx: TabContext) -> None:
    """Lay out the "Statistics" tab and wire its events; publishes ``ctx.scope`` (refreshed on page load).
    ``ctx.private``: no user names in the initial choices (``build_app``)."""
    ws = ctx.ws
    with tab_page("Statistics", "statistics") as tab:
        with gr.Row():
            scope = gr.Dropdown([ALL_USERS] if ctx.private else scope_choices(ws), value=ALL_USERS, label="Users",
                                elem_id="stats-scope",
                                allow_custom_value=True)  # checked by the service, refreshed on page load
            refresh = gr.Button("Refresh", size="sm", elem_id="stats-refresh")
        summary = gr.Markdown(elem_id="stats-summary")
        with gr.Row():
            proportion = gr.Plot(show_label=False, elem_id="stats-proportion")
            cooccurrence = gr.Plot(show_label=False, elem_id="stats-cooccurrence")
        with gr.Row():
            object_size = gr.Plot(show_label=False, elem_id="stats-object-size")
            instances = gr.Plot(show_label=False, elem_id="stats-instances")
    ctx.scope = scope

    outputs = [proportion, cooccurrence, object_size, instances, summary, ctx.status]

    @guarded(len(outputs))
    def show(scope_value: str):
        figures = statistics_figures(ws, scope_value)
        return (figures.proportion, figures.cooccurrence, figures.object_size, figures.instances,
                figures.summary(), "")

    # Computed when the tab is opened (not at page load): mask statistics read every labelled mask once.
    gr.on([tab.select, scope.change, refresh.click], show, scope, outputs, api_name="statistics",
          trigger_mode="multiple")
