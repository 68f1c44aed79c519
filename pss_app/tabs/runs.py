"""Runs tab (layout and wiring only): launch form, live view of one run (polled by a ``gr.Timer``), history.

The job worker of this workspace starts when the tab is built (``pss.api.jobs.job_service``): it reaps jobs
left by a previous app, then starts queued jobs one per device as separate ``pss train`` processes.
"""
from __future__ import annotations

import gradio as gr

from pss.api import Workspace, list_users
from pss.api.devices import device_choices
from pss_app.feedback import guarded, refused
from pss_app.services import runs as svc

POLL_S = 1.0
VIEW_OUTPUTS = 14  # see ``_view``


def _view(view: svc.RunView | None, message: str = "") -> tuple:
    """Values for (header, bar, losses, evaluation, metrics, classes, config, log, state, cancel, resume, delete,
    signature, status). ``state`` is the view's numbers as JSON, for API clients (buttons are not returned)."""
    if view is None:
        return ("", "", None, None, "", None, "", "", None, gr.Button(interactive=False),
                gr.Button(interactive=False), gr.Button(interactive=False), "", message)
    return (view.header, svc.progress_html(view.progress, view.status), view.losses, view.evaluation, view.metrics,
            view.classes, view.config_yaml, view.log, svc.view_state(view), gr.Button(interactive=view.can_cancel),
            gr.Button(interactive=view.can_resume), gr.Button(interactive=view.can_delete), view.signature, message)


def build(ws: Workspace, load_trigger, private: bool = False) -> None:
    """Lay out the tab inside the current ``gr.Tab`` and wire its events; starts the workspace's job worker.

    ``private``: no user names, run ids or history rows in the initial values (``build_app``); the page-load
    event and the poll fill them after login."""
    svc.service(ws)  # worker thread + reaping of jobs whose process is gone
    users = [] if private else list_users(ws)
    methods = svc.method_choices()
    defaults = svc.form_defaults("demo")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### New run")
            preset = gr.Dropdown(svc.PRESETS, value="demo", label="Preset", elem_id="runs-preset")
            user = gr.Dropdown(users, value=users[0] if users else None, label="User", elem_id="runs-user",
                               allow_custom_value=True)  # checked by the launch
            method = gr.Dropdown(methods, value=defaults["method"], label="Method", elem_id="runs-method")
            context = gr.Dropdown(svc.context_choices(defaults["method"]), value="default", label="Context module",
                                  elem_id="runs-context")
            with gr.Row():
                k = gr.Number(defaults["k"], label="Groups K", precision=0, elem_id="runs-k")
                steps = gr.Number(defaults["steps"], label="Steps", precision=0, elem_id="runs-steps")
            with gr.Row():
                lr = gr.Number(defaults["lr"], label="Learning rate", elem_id="runs-lr")
                batch = gr.Number(defaults["batch_size"], label="Batch size", precision=0, elem_id="runs-batch")
            with gr.Row():
                seed = gr.Number(defaults["seed"], label="Seed", precision=0, elem_id="runs-seed")
                device = gr.Dropdown(device_choices(), value="auto", label="Device", elem_id="runs-device",
                                     allow_custom_value=True)  # checked by the launch (names the choices)
            init_from = gr.Dropdown(svc.init_choices(ws)[:1] if private else svc.init_choices(ws), value="", label="Start from (init-from run)",
                                    elem_id="runs-init", allow_custom_value=True)  # runs finish after page load
            launch = gr.Button("Launch", variant="primary", elem_id="runs-launch")
            form_status = gr.Markdown(elem_id="runs-form-status")
        with gr.Column(scale=3):
            selected = gr.Textbox(label="Run", placeholder="launch a run, or pick one in the history below",
                                  elem_id="runs-selected")
            header = gr.Markdown(elem_id="runs-header")
            bar = gr.HTML(elem_id="runs-progress")
            with gr.Row():
                cancel = gr.Button("Cancel", interactive=False, size="sm", elem_id="runs-cancel")
                resume = gr.Button("Resume", interactive=False, size="sm", elem_id="runs-resume")
                delete = gr.Button("Delete…", interactive=False, size="sm", variant="stop", elem_id="runs-delete")
            with gr.Row(visible=False) as confirm_row:
                confirm_text = gr.Markdown(elem_id="runs-delete-question")
                confirm = gr.Button("Delete for good", variant="stop", size="sm", elem_id="runs-delete-confirm")
                keep = gr.Button("Keep", size="sm", elem_id="runs-delete-keep")
            action_status = gr.Markdown(elem_id="runs-action-status")
            with gr.Row():
                losses = gr.Plot(show_label=False, elem_id="runs-losses")
                evaluation = gr.Plot(show_label=False, elem_id="runs-eval")
            metrics = gr.Markdown(elem_id="runs-metrics")
            classes = gr.Plot(show_label=False, elem_id="runs-classes")
            with gr.Accordion("Log (last lines)", open=True):
                log = gr.Textbox(show_label=False, lines=svc.LOG_LINES, max_lines=svc.LOG_LINES, autoscroll=True,
                                 interactive=False, elem_id="runs-log")
            with gr.Accordion("Config", open=False):
                config = gr.Code(language="yaml", show_label=False, interactive=False, elem_id="runs-config")
            state = gr.JSON(visible=False, elem_id="runs-state")
    gr.Markdown("### History")
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="run id, user, method, any config value",
                            elem_id="runs-search", scale=3)
        status_filter = gr.Dropdown(svc.STATUS_CHOICES, value=svc.ALL, label="Status", elem_id="runs-filter-status")
        method_filter = gr.Dropdown([svc.ALL, *methods], value=svc.ALL, label="Method", elem_id="runs-filter-method")
        user_filter = gr.Dropdown([svc.ALL, *users], value=svc.ALL, label="User", elem_id="runs-filter-user",
                                  allow_custom_value=True)
    table = gr.Dataframe(svc.history_table(ws).head(0) if private else svc.history_table(ws), interactive=False, wrap=True, max_height=420,
                         column_widths=["5%", "8%", "21%", "7%", "6%", "6%", "6%", "7%", "5%", "11%", "18%"],
                         elem_id="runs-history")
    view_sig, table_sig = gr.State(""), gr.State("")
    timer = gr.Timer(POLL_S)

    view_outputs = [header, bar, losses, evaluation, metrics, classes, config, log, state, cancel, resume, delete,
                    view_sig, action_status]
    filters = [search, status_filter, method_filter, user_filter]

    @guarded(VIEW_OUTPUTS)
    def show(run_id: str):
        return _view(svc.run_view(ws, run_id.strip())) if run_id and run_id.strip() else _view(None)

    selected.change(show, selected, view_outputs, api_name="run_view", trigger_mode="always_last")

    @guarded(VIEW_OUTPUTS + 3, status_index=VIEW_OUTPUTS - 1)
    def poll(run_id: str, seen_view: str, seen_table: str, search_text: str, status_value: str, method_value: str,
             user_value: str):
        """Re-render only what changed since the last tick (the signatures are cheap stats and one query)."""
        filter_values = (search_text, status_value, method_value, user_value)
        run_id = (run_id or "").strip()
        view: tuple = tuple(gr.skip() for _ in range(VIEW_OUTPUTS))
        if run_id and svc.view_signature(ws, run_id) != seen_view:
            view = _view(svc.run_view(ws, run_id))
        signature = svc.history_signature(ws) + repr(filter_values)
        table_update = (svc.history_table(ws, *filter_values), signature, gr.Dropdown(choices=svc.init_choices(ws))) \
            if signature != seen_table else (gr.skip(), gr.skip(), gr.skip())
        return (*view, *table_update)

    timer.tick(poll, [selected, view_sig, table_sig, *filters], [*view_outputs, table, table_sig, init_from],
               api_name="runs_poll", show_progress="hidden")

    @guarded(2)
    def launch_run(preset_name: str, user_name: str, method_name: str, context_mode: str, k_value: float | None,
                   steps_value: float | None, lr_value: float | None, batch_value: float | None,
                   seed_value: float | None, device_name: str, init_run: str | None):
        result = svc.launch_from_form(ws, preset_name, user_name, method_name, context_mode, k_value, steps_value,
                                      lr_value, batch_value, seed_value, device_name, init_run)
        return result.run_id, result.message

    launch.click(launch_run, [preset, user, method, context, k, steps, lr, batch, seed, device, init_from],
                 [selected, form_status], api_name="launch_run")

    @guarded(1)
    def cancel_run(run_id: str):
        status = svc.service(ws).cancel(svc.selected_run(run_id))
        return f"cancel requested: job {status}" if status == "running" else f"job {status}"

    cancel.click(cancel_run, selected, action_status, api_name="cancel_run")

    @guarded(1)
    def resume_run(run_id: str):
        launched = svc.service(ws).resume(svc.selected_run(run_id))
        return f"resuming `{launched.run_id}` on `{launched.device}` (job {launched.job_id})"

    resume.click(resume_run, selected, action_status, api_name="resume_run")

    delete.click(lambda run_id: (gr.Row(visible=True), f"Delete run `{run_id}` — its checkpoints, predictions, "
                                                       "log and history row?"),
                 selected, [confirm_row, confirm_text], api_visibility="private")
    keep.click(lambda: gr.Row(visible=False), None, confirm_row, api_visibility="private")

    @guarded(3, status_index=2)
    def delete_run(run_id: str):
        run_id = svc.selected_run(run_id)
        svc.service(ws).delete(run_id)
        return "", gr.Row(visible=False), f"deleted run `{run_id}`"

    confirm.click(delete_run, selected, [selected, confirm_row, action_status], api_name="delete_run")

    @refused  # its only output is the table: a message goes to an error toast, not into the table
    def history(search_text: str, status_value: str, method_value: str, user_value: str):
        return svc.history_table(ws, search_text, status_value, method_value, user_value)

    gr.on([search.submit, status_filter.change, method_filter.change, user_filter.change], history, filters, table,
          api_name="run_history", trigger_mode="always_last")

    def pick(evt: gr.SelectData) -> str:
        row = evt.row_value or []
        return str(row[svc.HISTORY_COLUMNS.index("run")]) if len(row) == len(svc.HISTORY_COLUMNS) else gr.skip()

    table.select(pick, None, selected, api_visibility="private")

    @guarded(6)
    def preset_values(preset_name: str):
        values = svc.form_defaults(preset_name)
        return (*(values[key] for key in ("k", "steps", "lr", "batch_size", "seed")), "")

    preset.change(preset_values, preset, [k, steps, lr, batch, seed, form_status], api_name="runs_preset_defaults")
    @refused
    def context_for(name: str):
        return gr.Dropdown(choices=svc.context_choices(name), value="default")

    method.change(context_for, method, context, api_name="runs_context_choices")

    def choices(current_user: str | None):
        names = list_users(ws)
        value = current_user if current_user in names else (names[0] if names else None)
        return (gr.Dropdown(choices=names, value=value), gr.Dropdown(choices=svc.init_choices(ws)),
                gr.Dropdown(choices=device_choices()), gr.Dropdown(choices=[svc.ALL, *names]))

    load_trigger(choices, user, [user, init_from, device, user_filter], api_name="runs_choices")
