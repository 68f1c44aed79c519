"""Annotate tab (layout and wiring only): tags, a painted mask in VOC colours, click tools (GrabCut, superpixels),
pre-labels from a run, server-side drafts with undo/redo, submit with history, the "annotate next" queue and
"Fine-tune with my annotations". The logic is in ``pss_app.services.annotate`` (and ``pss.api.annotate*``)."""
from __future__ import annotations

import gradio as gr

from pss.api import CLASS_NAMES
from pss.api.annotate_tools import DEFAULT_THRESHOLD
from pss.errors import DatasetError
from pss_app.feedback import guarded, problem, refused
from pss_app.services import annotate as svc
from pss_app.services.annotate import HISTORY_COLUMNS, ORDERS, QUEUE_COLUMNS, TAG_CHOICES, TOOLS
from pss_app.tabs.context import TabContext, tab_page
from pss_app.tabs.stroke_editor import AWAIT_STROKES_JS, stroke_editor

FINETUNE_POLL_S = 5.0

# Keyboard shortcuts: Gradio has none for the editor, so a page-level handler clicks the tab's buttons (only while
# the Annotate tab is shown and focus is not in a text field). Loaded with ``launch(head=...)`` (pss_app.app).
SHORTCUT_JS = """
<script>
if (!window.pssAnnotateKeys) {  // once per page, however often the head is inserted
window.pssAnnotateKeys = true;
document.addEventListener('keydown', (e) => {
  if (e.repeat) return;  // a held key is one action
  const t = e.target;
  // skip text fields (the editor's size slider is one, but no shortcut here is a plain key)
  const typing = t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable);
  if (typing && !(t.closest && t.closest('#annotate-editor'))) return;
  const shown = (id) => { const el = document.getElementById(id); return el && el.offsetParent !== null ? el : null; };
  if (!shown('annotate-submit')) return;
  const ctrl = e.ctrlKey || e.metaKey;
  let id = null;
  if (ctrl && e.code === 'KeyZ') id = e.shiftKey ? 'annotate-redo' : 'annotate-undo';
  else if (ctrl && e.code === 'KeyY') id = 'annotate-redo';
  else if (ctrl && e.code === 'KeyS') id = 'annotate-submit';
  else if (e.altKey && e.code === 'KeyN') id = 'annotate-next';
  else if (e.altKey && e.code === 'KeyP') id = 'annotate-prelabel';
  else if (e.altKey && e.code === 'KeyR') id = 'annotate-review';
  const button = id && shown(id);
  if (button) { e.preventDefault(); button.click(); }
});
}
</script>
"""


def _dropdown(choices: list[tuple[str, str]], current: str | None, keep_none: bool = False) -> gr.Dropdown:
    values = [value for _, value in choices]
    fallback = None if keep_none else (values[0] if values else None)
    return gr.Dropdown(choices=choices, value=current if current in values else fallback)


def build(ctx: TabContext) -> None:
    """Lay out the "Annotate" tab and wire its events (after Compare, whose pickers it opens runs in)."""
    with tab_page("Annotate", "annotate") as page:
        _body(ctx, [page.select])


def _body(ctx: TabContext, refresh_triggers: list) -> None:
    ws, user, status = ctx.ws, ctx.user, ctx.status
    gr.Markdown("Pick an image (or **Next from queue**), paint its mask with the class colours, or click with the "
                "tools on the right; every stroke is saved on the server as a draft when you let go. **Submit** "
                "writes the "
                f"mask to the user's `SegmentationClass/`.  \n{svc.shortcuts_markdown()}", elem_id="annotate-help")
    with gr.Row():
        image = gr.Dropdown([], label="Image (name · state)", scale=3, elem_id="annotate-image",
                            allow_custom_value=True)  # images come and go; the services check the name
        run = gr.Dropdown([], label="Run (model for pre-label, click seeds and the queue)", scale=3,
                          elem_id="annotate-run", allow_custom_value=True)
        next_btn = gr.Button("Next from queue", scale=1, elem_id="annotate-next")
    info = gr.Markdown(elem_id="annotate-info")
    with gr.Row(visible=False, elem_id="annotate-offer-row") as offer_row:
        offer = gr.Markdown(elem_id="annotate-offer")
        keep_btn = gr.Button("Keep draft", scale=0, elem_id="annotate-keep")
        discard_btn = gr.Button("Discard draft", variant="stop", scale=0, elem_id="annotate-discard")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            def save_stroke(payload: dict) -> dict:  # called by the editor's page script for each stroke
                return svc.stroke_answer(ws, payload)

            editor = stroke_editor(save_stroke, "annotate-editor")
        with gr.Column(scale=2):
            preview = gr.Image(label="Click tools: click on the image · overlay at the chosen opacity", type="numpy",
                               format="png", interactive=False, height=300, elem_id="annotate-preview")
            tool = gr.Radio(list(TOOLS), value=TOOLS[0], label="Click tool", elem_id="annotate-tool")
            with gr.Row():
                klass = gr.Dropdown(list(CLASS_NAMES), value="person", label="Class for clicks / fill",
                                    elem_id="annotate-class")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity",
                                    elem_id="annotate-opacity")
            click_info = gr.Markdown(elem_id="annotate-click-info")
    with gr.Row():
        undo_btn = gr.Button("↶ Undo", elem_id="annotate-undo", interactive=False)
        redo_btn = gr.Button("↷ Redo", elem_id="annotate-redo", interactive=False)
        submit_btn = gr.Button("Submit mask", variant="primary", elem_id="annotate-submit")
        review_btn = gr.Button("Mark reviewed", elem_id="annotate-review")
    saved = gr.Markdown(elem_id="annotate-saved")
    with gr.Row(equal_height=True):
        tags = gr.CheckboxGroup(TAG_CHOICES, label="Image tags (written to the user's imgLabelList.txt)", scale=5,
                                elem_id="annotate-tags")
        save_tags = gr.Button("Save tags", scale=1, elem_id="annotate-save-tags")
    with gr.Accordion("Pre-label from the run", open=True):
        with gr.Row(equal_height=True):
            threshold = gr.Slider(0.0, 1.0, value=DEFAULT_THRESHOLD, step=0.05, scale=3, elem_id="annotate-threshold",
                                  label="Confidence threshold (pixels below it stay unlabelled for you to paint)")
            prelabel_btn = gr.Button("Pre-label (tags + background only)", scale=1, elem_id="annotate-prelabel")
    with gr.Accordion("Annotate next: the queue (click a row to open the image)", open=False):
        with gr.Row():
            order = gr.Radio(list(ORDERS), value=ORDERS[0], label="Order (random = the baseline)", scale=3,
                             elem_id="annotate-order")
            refresh_queue = gr.Button("Refresh queue", scale=1, elem_id="annotate-refresh-queue")
        queue_note = gr.Markdown(elem_id="annotate-queue-note")
        queue = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, max_height=320, wrap=True,
                             elem_id="annotate-queue")
    with gr.Accordion("History of this image (append-only; click a row for its diff)", open=False):
        history = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, max_height=260,
                               elem_id="annotate-history")
        with gr.Row(equal_height=True):
            version = gr.Number(None, label="Version", precision=0, minimum=0, scale=1, elem_id="annotate-version")
            revert_btn = gr.Button("Revert to this version", scale=1, elem_id="annotate-revert")
        diff = gr.Markdown(elem_id="annotate-diff")
    with gr.Accordion("Fine-tune with my annotations", open=False):
        gr.Markdown("Trains a run of the user from a finished run's weights and config, with the annotated images "
                    "(`annotated.txt`) as an extra supervised stream (`train.annotated_weight=1.0`), through the job "
                    "queue (it shows in **Runs**). FIoU/MIoU before and after are on the evaluation images.")
        with gr.Row(equal_height=True):
            start = gr.Dropdown([], label="Start from run", scale=3, elem_id="annotate-start", allow_custom_value=True)
            finetune_btn = gr.Button("Fine-tune with my annotations", variant="primary", scale=1,
                                     elem_id="annotate-finetune")
        finetune_info = gr.Markdown(elem_id="annotate-finetune-info")
        open_compare = gr.Button("Open both runs in Compare", elem_id="annotate-open-compare")
    key = gr.State("")  # user/name of the image the editor holds (a save for another image is refused)
    session = gr.State("")  # the click session (JSON: image, class, clicks)
    finetune = gr.State("")  # "start run|fine-tune run" being watched
    finetune_timer = gr.Timer(FINETUNE_POLL_S, active=False)

    view_outputs = [key, editor, preview, info, tags, offer, offer_row, history, undo_btn, redo_btn]

    def shown(view: svc.AnnotateView) -> list:
        return [view.key, view.editor, view.preview, view.info, view.tags, view.draft_offer,
                gr.Row(visible=bool(view.draft_offer)), view.history, gr.Button(interactive=view.can_undo),
                gr.Button(interactive=view.can_redo)]

    def nothing() -> list:
        return ["", None, None, "", [], "", gr.Row(visible=False), [], gr.Button(interactive=False),
                gr.Button(interactive=False)]

    # ---- choices ----
    @guarded(4)
    def choices(user_name: str, image_value: str | None, run_value: str | None, start_value: str | None):
        runs = svc.run_choices(ws, user_name)
        finished = [c for c in runs if c[1]]
        return (_dropdown(svc.image_choices(ws, user_name), image_value, keep_none=True),
                _dropdown(runs, run_value if run_value else (finished[0][1] if finished else "")),
                _dropdown(finished, start_value), "")

    gr.on(list(refresh_triggers), choices, [user, image, run, start], [image, run, start, status],
          api_name="annotate_choices")

    @guarded(4)
    def other_user(user_name: str):
        runs = svc.run_choices(ws, user_name)
        finished = [c for c in runs if c[1]]
        return (gr.Dropdown(choices=svc.image_choices(ws, user_name), value=None),
                _dropdown(runs, finished[0][1] if finished else ""), _dropdown(finished, None), "")

    user.change(other_user, user, [image, run, start, status], api_visibility="private")

    # ---- one image ----
    @guarded(len(view_outputs) + 2)
    def open_image(user_name: str, name: str | None, opacity_value: float, tool_value: str):
        if not user_name or not name:
            return (*nothing(), "", "")
        return (*shown(svc.image_view(ws, user_name, name, opacity_value, tool_value, offer=True)), "", "")

    gr.on([image.change], open_image, [user, image, opacity, tool], [*view_outputs, session, status],
          api_name="annotate_open")

    @guarded(len(view_outputs) + 1)
    def redraw(user_name: str, name: str | None, key_value: str, opacity_value: float, tool_value: str,
               session_value: str):
        """Another opacity or tool: redraw the editor's background and the preview (strokes are saved already)."""
        if not user_name or not name:
            return (*[gr.skip()] * len(view_outputs), "")
        clicks, _ = svc.parse_clicks(session_value, key_value)
        return (*shown(svc.image_view(ws, user_name, name, opacity_value, tool_value, clicks)), "")

    gr.on([opacity.release, tool.change], redraw, [user, image, key, opacity, tool, session], [*view_outputs, status],
          api_visibility="private")

    @guarded(5)
    def after_stroke(user_name: str, name: str | None, opacity_value: float, tool_value: str):
        """After each stroke the server saved (the page's ``saved`` event, not on the save's path): the caption,
        the undo/redo buttons (a stroke ends the redo stack) and the click preview follow."""
        if not user_name or not name:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), ""
        view = svc.image_view(ws, user_name, name, opacity_value, tool_value)
        return (svc.saved_caption(ws, user_name, name), gr.Button(interactive=view.can_undo),
                gr.Button(interactive=view.can_redo), view.preview, "")

    editor.saved(after_stroke, [user, image, opacity, tool], [saved, undo_btn, redo_btn, preview, status],
                 api_name="annotate_after_stroke", api_visibility="private", trigger_mode="always_last",
                 show_progress="hidden")

    @refused
    def stroke_api(user_name: str, name: str, key_value: str, stroke: dict) -> str:
        """Paint one stroke (``{"points": [[x, y], ...], "size": d, "class_id": c | null}``, image pixels) into the
        draft of the image the key names: the same as a stroke in the editor (for API clients and tests)."""
        return svc.save_stroke(ws, user_name, name, key_value, stroke).message

    gr.api(stroke_api, api_name="annotate_stroke")

    @guarded(len(view_outputs) + 1)
    def step(user_name: str, name: str, opacity_value: float, tool_value: str, delta: int):
        return (*shown(svc.undo_redo(ws, user_name, name, delta, opacity_value, tool_value)), "")

    # "multiple": two quick Ctrl+Z are two undos (a button ignores clicks while its event runs by default); they
    # queue one after the other, each stepping from the stack's position then
    undo_btn.click(lambda u, n, o, t: step(u, n, o, t, -1), [user, image, opacity, tool], [*view_outputs, status],
                   api_name="annotate_undo", trigger_mode="multiple")
    redo_btn.click(lambda u, n, o, t: step(u, n, o, t, +1), [user, image, opacity, tool], [*view_outputs, status],
                   api_name="annotate_redo", trigger_mode="multiple")

    @guarded(len(view_outputs) + 1)
    def discard(user_name: str, name: str, opacity_value: float, tool_value: str):
        svc.ann.discard_draft(ws, user_name, name)
        return (*shown(svc.image_view(ws, user_name, name, opacity_value, tool_value)), "")

    discard_btn.click(discard, [user, image, opacity, tool], [*view_outputs, status], api_name="annotate_discard")
    keep_btn.click(lambda: gr.Row(visible=False), None, offer_row, api_visibility="private")

    @guarded(len(view_outputs) + 2)
    def prelabel(user_name: str, name: str, run_id: str | None, threshold_value: float, opacity_value: float,
                 tool_value: str):
        view, message = svc.apply_prelabel(ws, user_name, name, run_id or "", threshold_value, opacity_value,
                                           tool_value)
        return (*shown(view), message, "")

    prelabel_btn.click(prelabel, [user, image, run, threshold, opacity, tool], [*view_outputs, click_info, status],
                       api_name="annotate_prelabel")

    @guarded(len(view_outputs) + 3)
    def clicked(user_name: str, name: str, key_value: str, tool_value: str, class_name: str, session_value: str,
                run_id: str | None, opacity_value: float, evt: gr.SelectData):
        if not isinstance(evt.index, (list, tuple)) or len(evt.index) != 2 or evt.index[0] is None:
            return (*[gr.skip()] * len(view_outputs), gr.skip(), gr.skip(), "")
        x, y = svc.preview_pixel(ws, user_name, name, evt.index[0], evt.index[1])  # the preview may be enlarged
        view, new_session, message = svc.click(ws, user_name, name, key_value, tool_value, class_name, x, y,
                                               session_value, run_id, opacity_value)
        return (*shown(view), new_session, message, "")

    preview.select(clicked, [user, image, key, tool, klass, session, run, opacity],
                   [*view_outputs, session, click_info, status], api_visibility="private")

    @guarded(len(view_outputs) + 3)
    def click_at(user_name: str, name: str, key_value: str, tool_value: str, class_name: str, session_value: str,
                 run_id: str | None, opacity_value: float, x: float, y: float):
        """The same as clicking the preview at image pixel (x, y) (for API clients and tests)."""
        if x is None or y is None:
            raise DatasetError("click position: x and y (image pixels) are both needed")
        view, new_session, message = svc.click(ws, user_name, name, key_value, tool_value, class_name, int(x), int(y),
                                               session_value, run_id, opacity_value)
        return (*shown(view), new_session, message, "")

    hidden_x, hidden_y = gr.Number(visible=False), gr.Number(visible=False)
    click_go = gr.Button(visible=False)
    click_go.click(click_at, [user, image, key, tool, klass, session, run, opacity, hidden_x, hidden_y],
                    [*view_outputs, session, click_info, status], api_name="annotate_click")

    @guarded(len(view_outputs) + 3)
    def submit(user_name: str, name: str, key_value: str, opacity_value: float, tool_value: str):
        view, message = svc.submit(ws, user_name, name, key_value, ctx.annotator, opacity_value, tool_value)
        return (*shown(view), message, gr.Dropdown(choices=svc.image_choices(ws, user_name)), "")

    submit_btn.click(submit, [user, image, key, opacity, tool], [*view_outputs, saved, image, status],
                     api_name="annotate_submit", js=AWAIT_STROKES_JS)

    @guarded(len(view_outputs) + 2)
    def review(user_name: str, name: str, opacity_value: float, tool_value: str):
        entry = svc.ann.mark_reviewed(ws, user_name, name, ctx.annotator)
        view = svc.image_view(ws, user_name, name, opacity_value, tool_value)
        return (*shown(view), f"✔ {name} v{entry.version} marked reviewed by {entry.annotator}", "")

    review_btn.click(review, [user, image, opacity, tool], [*view_outputs, saved, status], api_name="annotate_review")

    @guarded(3)
    def write_tags(user_name: str, name: str, chosen: list[str] | None):
        written = svc.ann.write_tags(ws, user_name, name, chosen or [])
        view = svc.image_view(ws, user_name, name)
        return view.info, f"✔ tags of {name}: {', '.join(written) or 'UNKNOWN (none)'}", ""

    save_tags.click(write_tags, [user, image, tags], [info, saved, status], api_name="annotate_tags")

    # ---- the image list's "name · state" labels follow every action ----
    # A listener of its own on what the actions already write (``info`` holds the state line of every action that
    # shows an image: open, undo/redo, discard, pre-label, click, submit, review, revert; ``saved`` gets each draft
    # save's message), so the save path stays as it is and the labels never lag behind. Only the choices change,
    # never the value: the editor is not reloaded. No status output: it never clears another action's message.
    @refused
    def relabel(user_name: str):
        return gr.Dropdown(choices=svc.image_choices(ws, user_name))

    gr.on([info.change, saved.change], relabel, user, image, api_name="annotate_image_labels",
          show_progress="hidden")

    # ---- history ----
    def pick_version(table, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else None
        if row is None or table is None or row >= len(table):
            return gr.skip()
        return int(table.iloc[row]["version"])

    history.select(pick_version, history, version, api_visibility="private")

    @guarded(2)
    def show_diff(user_name: str, name: str | None, version_value: float | None):
        if not name:
            return "", ""
        return svc.history_diff(ws, user_name, name, version_value), ""

    version.change(show_diff, [user, image, version], [diff, status], api_name="annotate_diff")

    @guarded(len(view_outputs) + 3)
    def revert(user_name: str, name: str, version_value: float | None, opacity_value: float, tool_value: str):
        if version_value is None:
            return (*[gr.skip()] * len(view_outputs), gr.skip(), gr.skip(), problem("choose a version (a row)"))
        done = svc.ann.revert(ws, user_name, name, int(version_value), ctx.annotator)
        view = svc.image_view(ws, user_name, name, opacity_value, tool_value)
        return (*shown(view), "✔ " + done.message, gr.Dropdown(choices=svc.image_choices(ws, user_name)), "")

    revert_btn.click(revert, [user, image, version, opacity, tool], [*view_outputs, saved, image, status],
                     api_name="annotate_revert")

    # ---- the queue ----
    @guarded(3)
    def refresh(user_name: str, run_id: str | None, order_value: str, k_value: float):
        rows, note = svc.queue_rows(ws, user_name, run_id, order_value, int(k_value or 8))
        return rows, note, ""

    gr.on([refresh_queue.click, order.change], refresh, [user, run, order, ctx.k], [queue, queue_note, status],
          api_name="annotate_queue")

    def open_row(table, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else None
        if row is None or table is None or row >= len(table):
            return gr.skip()
        return table.iloc[row]["image"]

    queue.select(open_row, queue, image, api_visibility="private")

    @guarded(4)
    def next_image(user_name: str, run_id: str | None, order_value: str, k_value: float, table, current: str | None):
        rows = table.values.tolist() if table is not None and len(table) else []
        note = gr.skip()
        if not rows:
            rows, note = svc.queue_rows(ws, user_name, run_id, order_value, int(k_value or 8))
        name = svc.next_in_queue(rows, current)
        return rows, note, gr.Dropdown(choices=svc.image_choices(ws, user_name), value=name), ""

    next_btn.click(next_image, [user, run, order, ctx.k, queue, image], [queue, queue_note, image, status],
                   api_name="annotate_next")

    # ---- fine-tune ----
    @guarded(4)
    def launch(user_name: str, start_run: str | None):
        run_id, message = svc.launch_finetune(ws, user_name, start_run or "")
        return message, f"{start_run}|{run_id}", gr.Timer(active=True), ""

    finetune_btn.click(launch, [user, start], [finetune_info, finetune, finetune_timer, status],
                       api_name="annotate_finetune")

    @guarded(3)
    def poll(user_name: str, watched: str):
        pair = tuple(watched.split("|", 1)) if watched and "|" in watched else svc.latest_finetune(ws, user_name)
        if not pair:
            return "", gr.Timer(active=False), ""
        text, finished = svc.finetune_result(ws, pair[0], pair[1])
        return text, gr.Timer(active=not finished), ""

    finetune_timer.tick(poll, [user, finetune], [finetune_info, finetune_timer, status], api_visibility="private")
    gr.on(list(refresh_triggers), poll, [user, finetune], [finetune_info, finetune_timer, status],
          api_name="annotate_finetune_result")

    compare_runs, compare_image = ctx.published("compare_pickers")

    @guarded(4)
    def to_compare(user_name: str, watched: str, name: str | None):
        pair = tuple(watched.split("|", 1)) if watched and "|" in watched else svc.latest_finetune(ws, user_name)
        if not pair:
            return gr.skip(), gr.skip(), gr.skip(), problem("launch a fine-tune first")
        from pss_app.services.inspect import image_choices as compare_images

        chosen = svc.finetune_compare(ws, user_name, pair[0], pair[1], name, compare_images(ws, user_name))
        return (gr.Tabs(selected="compare"), gr.CheckboxGroup(choices=chosen.run_choices, value=chosen.runs),
                gr.Dropdown(choices=chosen.image_choices, value=chosen.image), "")

    open_compare.click(to_compare, [user, finetune, image], [ctx.published("tabs"), compare_runs, compare_image,
                                                              status], api_visibility="private")
