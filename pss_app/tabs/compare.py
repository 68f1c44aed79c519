"""Compare tab (layout and wiring only): N finished runs of the user and the GT side by side (paper Fig. 4),
error maps, where run B beats run A image by image, per-class IoU and the paper's Tables 1-2, CSV export."""
from __future__ import annotations

import gradio as gr

from pss.api import Workspace
from pss.api.run_choice import done_runs
from pss_app.feedback import guarded
from pss_app.services.compare import FILTERS, MAX_RUNS, compare_view, error_legend_html, export, image_table, tables
from pss_app.services.inspect import image_choices
from pss_app.services.quickstart import compare_selection, empty_state
from pss_app.tabs.context import TabContext, tab_page


def _default_runs(ws: Workspace, user: str) -> tuple[list[tuple[str, str]], list[str]]:
    """All finished runs of the user; preselected: the demo comparison's runs (No-DA, ADVENT, OURS-S1, OURS-S2)
    when it has finished ones, else the newest run of each method (at most 4)."""
    runs = done_runs(ws, user) if user else []
    newest: dict[str, str] = {}
    for run in runs:  # newest first
        newest.setdefault(run.method, run.run_id)
    listed = {run.run_id for run in runs}
    chosen = [r for r in compare_selection(ws, user) if r in listed]
    return [(run.label, run.run_id) for run in runs], chosen if len(chosen) >= 2 else list(newest.values())[:4]


def build(ctx: TabContext) -> None:
    """Lay out the "Compare" tab and wire its events; opening the tab, or the banner's "Open Compare", re-lists
    the user's runs (after the quick-start banner, which publishes that button)."""
    banner = ctx.published("banner")
    with tab_page("Compare", "compare") as page:
        _body(ctx, [page.select, banner.open_compare.click])


def _body(ctx: TabContext, refresh_triggers: list) -> None:
    """The tab's layout and events; ``refresh_triggers`` re-list the user's runs and images."""
    ws, user, status = ctx.ws, ctx.user, ctx.status
    empty = gr.Markdown(elem_id="compare-empty")
    runs = gr.CheckboxGroup([], label=f"Runs to compare (finished runs of the user, up to {MAX_RUNS})",
                            elem_id="compare-runs")
    with gr.Row():
        image = gr.Dropdown([], label="Image (· GT = labelled)", scale=3, elem_id="compare-image",
                            allow_custom_value=True)
        show_btn = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-show")
    gr.Markdown("Photo · ground truth · each run's prediction with its IoU on this image (top row) and its error "
                "map against the ground truth (bottom row), all at the same size (paper Fig. 4).")
    figure = gr.Image(show_label=False, type="filepath", format="png", interactive=False, elem_id="compare-figure")
    gr.HTML(error_legend_html(), elem_id="compare-legend")
    messages = gr.Markdown(elem_id="compare-messages")
    scores = gr.Dataframe(label="This image: per-run IoU (%) and share of pixels per error category (%)",
                          interactive=False, elem_id="compare-scores")
    with gr.Accordion("Where does B win or lose? (per labelled image; click a row to show it above)", open=True):
        with gr.Row():
            run_a = gr.Dropdown([], label="Run A", elem_id="compare-a", allow_custom_value=True)
            run_b = gr.Dropdown([], label="Run B", elem_id="compare-b", allow_custom_value=True)
            metric = gr.Radio(["FIoU", "MIoU"], value="FIoU", label="Per-image score", elem_id="compare-metric")
            keep = gr.Radio(list(FILTERS), value=FILTERS[0], label="Show", elem_id="compare-filter")
        differences = gr.Dataframe(interactive=False, max_height=320, elem_id="compare-differences")
    with gr.Row(equal_height=False):
        per_class = gr.Dataframe(label="Per-class IoU (%) per run on this user", interactive=False, max_height=420,
                                 elem_id="compare-per-class")
        with gr.Column():
            fiou = gr.Dataframe(label="FIoU (%) · rows methods, columns users (latest finished run each)",
                                interactive=False, elem_id="compare-fiou")
            miou = gr.Dataframe(label="MIoU (%) · PSS convention", interactive=False, elem_id="compare-miou")
            export_btn = gr.Button("Export tables as CSV", elem_id="compare-export")
            files = gr.File(label="CSV files", file_count="multiple", interactive=False, elem_id="compare-files")

    ctx.compare_pickers = (runs, image)  # the Annotate tab opens a fine-tune and its start run here

    @guarded(3)
    def choices(user_name: str, image_value: str | None):
        run_list, chosen = _default_runs(ws, user_name)
        images = image_choices(ws, user_name)
        names = [value for _, value in images]
        value = image_value if image_value in names else (names[0] if names else None)
        return gr.CheckboxGroup(choices=run_list, value=chosen), gr.Dropdown(choices=images, value=value), ""

    gr.on(list(refresh_triggers), choices, [user, image], [runs, image, status], api_name="compare_choices")

    @guarded(2)
    def explain(user_name: str):
        """While the user has fewer than two finished runs: what this tab needs and the action that trains them."""
        return empty_state(ws, user_name, "compare", len(done_runs(ws, user_name)) if user_name else 0), ""

    # no progress timer in the hint box: it would flash "0.4s" there on every refresh
    gr.on([*refresh_triggers, user.change], explain, user, [empty, status], api_name="compare_empty_state",
          show_progress="hidden")

    @guarded(3)
    def other_user(user_name: str):
        """Another user: list its runs and images, pick none until the tab is opened again."""
        run_list, _ = _default_runs(ws, user_name)
        return (gr.CheckboxGroup(choices=run_list, value=[]),
                gr.Dropdown(choices=image_choices(ws, user_name), value=None), "")

    user.change(other_user, user, [runs, image, status], api_visibility="private")

    def pair(user_name: str, chosen: list[str] | None, a: str | None, b: str | None):
        """Run A / Run B choose among the compared runs (default: the last listed as A, the first as B)."""
        chosen = list(chosen or [])
        labels = {run.run_id: run.short for run in done_runs(ws, user_name)} if user_name else {}
        options = [(labels.get(r, r), r) for r in chosen]
        a = a if a in chosen else (chosen[-1] if chosen else None)
        b = b if b in chosen and b != a else next((r for r in chosen if r != a), a)
        return gr.Dropdown(choices=options, value=a), gr.Dropdown(choices=options, value=b)

    runs.change(pair, [user, runs, run_a, run_b], [run_a, run_b], api_visibility="private")

    view_outputs = [figure, scores, messages, status]

    @guarded(len(view_outputs))
    def show(user_name: str, name: str, chosen: list[str]):
        if not chosen or not name:
            return None, None, "choose runs and an image", ""
        view = compare_view(ws, user_name, name, chosen)
        return str(view.figure), view.scores, view.messages, ""

    gr.on([show_btn.click, image.change, runs.change], show, [user, image, runs], view_outputs,
          api_name="compare_image")

    @guarded(2)
    def diff_table(user_name: str, a: str, b: str, metric_value: str, keep_value: str):
        if not a or not b:
            return None, ""
        return image_table(ws, user_name, a, b, metric_value, keep_value), ""

    gr.on([run_a.change, run_b.change, metric.change, keep.change], diff_table, [user, run_a, run_b, metric, keep],
          [differences, status], api_name="compare_image_table")

    def open_row(table, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else None
        if row is None or table is None or row >= len(table):
            return gr.skip()
        return table.iloc[row]["image"]

    differences.select(open_row, differences, image, api_visibility="private")

    @guarded(4)
    def all_tables(user_name: str, chosen: list[str]):
        if not chosen:
            return None, None, None, ""
        return (*tables(ws, user_name, chosen), "")

    runs.change(all_tables, [user, runs], [per_class, fiou, miou, status], api_name="compare_tables")

    @guarded(2)
    def export_csv(user_name: str, chosen: list[str], a: str, b: str, metric_value: str):
        return export(ws, user_name, chosen, a, b, metric_value), ""

    export_btn.click(export_csv, [user, runs, run_a, run_b, metric], [files, status], api_name="compare_export")
