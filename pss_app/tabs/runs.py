"""Runs tab (layout and wiring only): launch form, live view of one run (polled by a ``gr.Timer``), history.

The job worker of this workspace starts when the tab is built (``pss.api.jobs.job_service``): it reaps jobs
left by a previous app, then starts queued jobs one per device as separate ``pss train`` processes.

The tab is three pieces, each a dataclass of its components laid out by one function: the form (:class:`RunForm`),
the live view of the selected run (:class:`LiveView`) and the history (:class:`History`). Handlers with several
outputs return ``{component: value}`` (Gradio fills the outputs a handler leaves out with "unchanged"); the order
of each event's ``outputs`` list is what ``gradio_client`` callers get back, so the lists keep their order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from pss.api import list_users
from pss.api.devices import device_choices
from pss_app.feedback import guarded, refused, reports_to
from pss_app.services import runs as svc
from pss_app.tabs.context import TabContext, tab_page

POLL_S = 1.0

Updates = dict[Any, Any]  # {component: value or gr.update}: what a multi-output handler returns


@dataclass
class RunForm:
    """The "New run" form."""

    preset: gr.Dropdown
    user: gr.Dropdown
    method: gr.Dropdown
    context: gr.Dropdown
    k: gr.Number
    steps: gr.Number
    lr: gr.Number
    batch: gr.Number
    seed: gr.Number
    device: gr.Dropdown
    init_from: gr.Dropdown
    run_on: gr.Radio  # this machine, or the job service's Ray cluster (disabled without Ray)
    launch: gr.Button
    status: gr.Markdown  # the form's own message line (a refused launch says why here)

    def launch_inputs(self) -> list[gr.components.Component]:
        """The launch's inputs, in the order ``/launch_run`` takes them."""
        return [self.preset, self.user, self.method, self.context, self.k, self.steps, self.lr, self.batch,
                self.seed, self.device, self.init_from, self.run_on]

    def preset_fields(self) -> dict[str, gr.Number]:
        """The numbers a preset sets, by their key in ``svc.form_defaults``, in ``/runs_preset_defaults`` order."""
        return {"k": self.k, "steps": self.steps, "lr": self.lr, "batch_size": self.batch, "seed": self.seed}


@dataclass
class LiveView:
    """The selected run: its id, what is shown of it, its buttons and the delete confirmation."""

    selected: gr.Textbox  # the run id; launching or picking a history row writes it
    header: gr.Markdown
    bar: gr.HTML
    cancel: gr.Button
    resume: gr.Button
    delete: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm: gr.Button
    keep: gr.Button
    status: gr.Markdown  # the message line of the buttons (and of a failed view or poll)
    losses: gr.Plot
    evaluation: gr.Plot
    metrics: gr.Markdown
    classes: gr.Plot
    log: gr.Textbox
    config: gr.Code
    state: gr.JSON  # the view's numbers as JSON, for API clients (buttons are not returned)
    signature: gr.State  # of what is shown: the poll re-renders only when the run's signature differs

    def outputs(self) -> list[gr.components.Component]:
        """What :meth:`render` writes, in the order ``/run_view`` and ``/runs_poll`` return it (clients index it)."""
        return [self.header, self.bar, self.losses, self.evaluation, self.metrics, self.classes, self.config,
                self.log, self.state, self.cancel, self.resume, self.delete, self.signature, self.status]

    def render(self, view: svc.RunView | None) -> Updates:
        """Every output of :meth:`outputs` for ``view``; showing a run clears the message line, showing nothing
        (``None``, e.g. right after a delete) keeps it, so "deleted run …" is not wiped by the emptied selection."""
        if view is None:
            return {self.header: "", self.bar: "", self.losses: None, self.evaluation: None, self.metrics: "",
                    self.classes: None, self.config: "", self.log: "", self.state: None,
                    self.cancel: gr.Button(interactive=False), self.resume: gr.Button(interactive=False),
                    self.delete: gr.Button(interactive=False), self.signature: "", self.status: gr.skip()}
        return {self.header: view.header, self.bar: svc.progress_html(view.progress, view.status),
                self.losses: view.losses, self.evaluation: view.evaluation, self.metrics: view.metrics,
                self.classes: view.classes, self.config: view.config_yaml, self.log: view.log,
                self.state: svc.view_state(view), self.cancel: gr.Button(interactive=view.can_cancel),
                self.resume: gr.Button(interactive=view.can_resume),
                self.delete: gr.Button(interactive=view.can_delete), self.signature: view.signature,
                self.status: ""}


@dataclass
class History:
    """The table of every run, its filters, and the signature of what it shows."""

    search: gr.Textbox
    status_filter: gr.Dropdown
    method_filter: gr.Dropdown
    user_filter: gr.Dropdown
    table: gr.Dataframe
    signature: gr.State  # of the index and the filters: the poll re-reads the table only when it differs

    def filters(self) -> list[gr.components.Component]:
        """The filters, in the order ``svc.history_table`` (and ``/run_history``) takes them."""
        return [self.search, self.status_filter, self.method_filter, self.user_filter]


# ---- layout ----------------------------------------------------------------------------------------------

def _form_layout(ctx: TabContext, methods: list[str]) -> RunForm:
    defaults = svc.form_defaults("demo")
    users = ctx.users
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
    init = svc.init_choices(ctx.ws)
    init_from = gr.Dropdown(init[:1] if ctx.private else init, value="", label="Start from (init-from run)",
                            elem_id="runs-init", allow_custom_value=True)  # runs finish after page load
    where = svc.run_on_choices(ctx.ws)
    run_on = gr.Radio(where.choices, value="local", label="Run on", info=where.info, elem_id="runs-run-on",
                      interactive=where.ray_available)  # without Ray there is nothing to choose: info says why
    launch = gr.Button("Launch", variant="primary", elem_id="runs-launch")
    status = gr.Markdown(elem_id="runs-form-status")
    return RunForm(preset, user, method, context, k, steps, lr, batch, seed, device, init_from, run_on, launch, status)


def _live_layout() -> LiveView:
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
    status = gr.Markdown(elem_id="runs-action-status")
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
    return LiveView(selected, header, bar, cancel, resume, delete, confirm_row, confirm_text, confirm, keep, status,
                    losses, evaluation, metrics, classes, log, config, state, gr.State(""))


def _history_layout(ctx: TabContext, methods: list[str]) -> History:
    gr.Markdown("### History")
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="run id, user, method, any config value",
                            elem_id="runs-search", scale=3)
        status_filter = gr.Dropdown(svc.STATUS_CHOICES, value=svc.ALL, label="Status", elem_id="runs-filter-status")
        method_filter = gr.Dropdown([svc.ALL, *methods], value=svc.ALL, label="Method", elem_id="runs-filter-method")
        user_filter = gr.Dropdown([svc.ALL, *ctx.users], value=svc.ALL, label="User", elem_id="runs-filter-user",
                                  allow_custom_value=True)
    rows = svc.history_table(ctx.ws)
    table = gr.Dataframe(rows.head(0) if ctx.private else rows, interactive=False, wrap=True, max_height=420,
                         column_widths=["5%", "8%", "21%", "7%", "6%", "6%", "6%", "7%", "5%", "11%", "18%"],
                         elem_id="runs-history")
    return History(search, status_filter, method_filter, user_filter, table, gr.State(""))


# ---- events ----------------------------------------------------------------------------------------------

def _wire_view(ctx: TabContext, form: RunForm, live: LiveView, history: History) -> None:
    """Showing the selected run, and the timer's poll of it and of the history."""
    ws = ctx.ws

    @reports_to(live.status)
    def show(run_id: str) -> Updates:
        return live.render(svc.run_view(ws, run_id.strip()) if run_id and run_id.strip() else None)

    live.selected.change(show, live.selected, live.outputs(), api_name="run_view", trigger_mode="always_last")

    @reports_to(live.status)
    def poll(run_id: str, seen_view: str, seen_table: str, search_text: str, status_value: str, method_value: str,
             user_value: str) -> Updates:
        """Re-render only what changed since the last tick (the signatures are cheap stats and one query)."""
        filter_values = (search_text, status_value, method_value, user_value)
        run_id = (run_id or "").strip()
        updates: Updates = {}
        if run_id and svc.view_signature(ws, run_id) != seen_view:
            updates |= live.render(svc.run_view(ws, run_id))
        signature = svc.history_signature(ws) + repr(filter_values)
        if signature != seen_table:
            updates |= {history.table: svc.history_table(ws, *filter_values), history.signature: signature,
                        form.init_from: gr.Dropdown(choices=svc.init_choices(ws))}
        return updates or gr.skip()  # Gradio reads an empty dict as no values at all, gr.skip() as all unchanged

    gr.Timer(POLL_S).tick(poll, [live.selected, live.signature, history.signature, *history.filters()],
                          [*live.outputs(), history.table, history.signature, form.init_from],
                          api_name="runs_poll", show_progress="hidden")


def _wire_form(ctx: TabContext, form: RunForm, live: LiveView) -> None:
    """Launching, the preset's defaults, the method's context modules."""
    ws = ctx.ws

    @reports_to(form.status)
    def launch_run(preset_name: str, user_name: str, method_name: str, context_mode: str, k_value: float | None,
                   steps_value: float | None, lr_value: float | None, batch_value: float | None,
                   seed_value: float | None, device_name: str, init_run: str | None, run_on: str | None) -> Updates:
        result = svc.launch_from_form(ws, preset_name, user_name, method_name, context_mode, k_value, steps_value,
                                      lr_value, batch_value, seed_value, device_name, init_run, run_on)
        return {live.selected: result.run_id, form.status: result.message}

    form.launch.click(launch_run, form.launch_inputs(), [live.selected, form.status], api_name="launch_run")

    fields = form.preset_fields()

    @reports_to(form.status)
    def preset_values(preset_name: str) -> Updates:
        values = svc.form_defaults(preset_name)
        return {**{field: values[key] for key, field in fields.items()}, form.status: ""}

    form.preset.change(preset_values, form.preset, [*fields.values(), form.status],
                       api_name="runs_preset_defaults")

    @refused  # its only output is the dropdown: a message goes to an error toast
    def context_for(name: str):
        return gr.Dropdown(choices=svc.context_choices(name), value="default")

    form.method.change(context_for, form.method, form.context, api_name="runs_context_choices")


def _wire_actions(ctx: TabContext, live: LiveView) -> None:
    """Cancel, resume, and delete after a confirmation."""

    @guarded(1)
    def cancel_run(run_id: str) -> str:
        status = ctx.jobs.cancel(svc.selected_run(run_id))
        return f"cancel requested: job {status}" if status == "running" else f"job {status}"

    live.cancel.click(cancel_run, live.selected, live.status, api_name="cancel_run")

    @guarded(1)
    def resume_run(run_id: str) -> str:
        launched = ctx.jobs.resume(svc.selected_run(run_id))
        return f"resuming `{launched.run_id}` on `{launched.device}` (job {launched.job_id})"

    live.resume.click(resume_run, live.selected, live.status, api_name="resume_run")

    def ask(run_id: str) -> Updates:
        return {live.confirm_row: gr.Row(visible=True),
                live.confirm_text: f"Delete run `{run_id}` — its checkpoints, predictions, log and history row?"}

    live.delete.click(ask, live.selected, [live.confirm_row, live.confirm_text], api_visibility="private")
    live.keep.click(lambda: gr.Row(visible=False), None, live.confirm_row, api_visibility="private")

    @reports_to(live.status)
    def delete_run(run_id: str) -> Updates:
        run_id = svc.selected_run(run_id)
        ctx.jobs.delete(run_id)
        return {live.selected: "", live.confirm_row: gr.Row(visible=False), live.status: f"deleted run `{run_id}`"}

    live.confirm.click(delete_run, live.selected, [live.selected, live.confirm_row, live.status],
                       api_name="delete_run")


def _wire_history(ctx: TabContext, live: LiveView, history: History) -> None:
    """Filtering the table, and picking a row to show it in the live view."""
    ws = ctx.ws

    @refused  # its only output is the table: a message goes to an error toast, not into the table
    def filtered(search_text: str, status_value: str, method_value: str, user_value: str):
        return svc.history_table(ws, search_text, status_value, method_value, user_value)

    filters = history.filters()
    gr.on([history.search.submit, history.status_filter.change, history.method_filter.change,
           history.user_filter.change], filtered, filters, history.table, api_name="run_history",
          trigger_mode="always_last")

    def pick(evt: gr.SelectData) -> str:
        row = evt.row_value or []
        return str(row[svc.HISTORY_COLUMNS.index("run")]) if len(row) == len(svc.HISTORY_COLUMNS) else gr.skip()

    history.table.select(pick, None, live.selected, api_visibility="private")


def _wire_choices(ctx: TabContext, form: RunForm, history: History) -> None:
    """On page load: the users, init-from runs and devices of now (users and runs come and go)."""
    ws = ctx.ws

    def choices(current_user: str | None) -> Updates:
        names = list_users(ws)
        value = current_user if current_user in names else (names[0] if names else None)
        return {form.user: gr.Dropdown(choices=names, value=value),
                form.init_from: gr.Dropdown(choices=svc.init_choices(ws)),
                form.device: gr.Dropdown(choices=device_choices()),
                history.user_filter: gr.Dropdown(choices=[svc.ALL, *names])}

    ctx.load(choices, form.user, [form.user, form.init_from, form.device, history.user_filter],
             api_name="runs_choices")


def build(ctx: TabContext) -> None:
    """Lay out the "Runs" tab and wire its events; starts the workspace's job worker.

    ``ctx.private``: no user names, run ids or history rows in the initial values (``build_app``); the page-load
    event and the poll fill them after login."""
    svc.service(ctx.ws)  # worker thread + reaping of jobs whose process is gone
    methods = svc.method_choices()
    with tab_page("Runs", "runs"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                form = _form_layout(ctx, methods)
            with gr.Column(scale=3):
                live = _live_layout()
        history = _history_layout(ctx, methods)
        _wire_view(ctx, form, live, history)
        _wire_form(ctx, form, live)
        _wire_actions(ctx, live)
        _wire_history(ctx, live, history)
        _wire_choices(ctx, form, history)
