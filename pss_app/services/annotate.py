"""The Annotate tab's logic as plain functions (no gradio here): what the editor, the click preview and the
captions show for one image, and each action (stroke save, undo/redo, pre-label, click, submit, revert, review,
queue, fine-tune) as a call into ``pss.api.annotate`` / ``pss.api.annotate_tools``.

The editor (``pss_app.tabs.stroke_editor``) shows the photo with the current mask blended in at the chosen opacity
and sends each stroke on mouse-up: its points, size and class (``pss.api.annotate.Stroke``); ``save_stroke`` paints
it into the newest draft version. The eraser puts back the mask the editor was loaded with (named in the key).
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pss.api import CLASS_NAMES, VOC_PALETTE, Workspace, done_runs, job_service, load_image
from pss.api.maps import display_size
from pss.api import annotate as ann
from pss.api import annotate_tools as tools
from pss.api.users import read_user
from pss.errors import DatasetError

TAG_CHOICES = list(CLASS_NAMES[1:])  # background is never a tag
TOOLS = ("+ object (GrabCut)", "− not object (GrabCut)", "fill superpixel")
QUEUE_COLUMNS = ["#", "image", "state", "mean entropy", "group", "why"]
HISTORY_COLUMNS = ["version", "action", "when", "annotator", "from", "pixels changed", "classes (pixels)"]
ORDERS = ("uncertainty", "random")
SHORTCUTS = [("Ctrl+Z", "undo (server-side)"), ("Ctrl+Shift+Z / Ctrl+Y", "redo"), ("Ctrl+S", "submit"),
             ("Alt+N", "next image from the queue"), ("Alt+P", "pre-label from the chosen run"),
             ("Alt+R", "mark reviewed")]


def shortcuts_markdown() -> str:
    return "Keyboard (outside text fields): " + " · ".join(f"**{k}** {what}" for k, what in SHORTCUTS)


# ---- choices ------------------------------------------------------------------------------------------------------

def image_choices(ws: Workspace, user: str) -> list[tuple[str, str]]:
    """(``name · state``, name) of every image of the user, in folder order."""
    if not user:
        return []
    states = ann.image_states(ws, user)
    return [(f"{name} · {state}", name) for name, state in states.items()]


def run_choices(ws: Workspace, user: str) -> list[tuple[str, str]]:
    """(label, run id) of the user's finished runs, newest first, after "none"."""
    runs = [(run.label, run.run_id) for run in done_runs(ws, user)] if user else []
    return [("none (no model)", ""), *runs]


# ---- the view of one image -------------------------------------------------------------------------------------------

@dataclass
class AnnotateView:
    """What the tab shows for one image: the editor's value, the click preview, captions, tags, history."""

    key: str  # ``user/name@base``: the image the editor holds and the mask its eraser puts back
    editor: dict[str, Any]  # the stroke editor's value (``editor_value``)
    preview: np.ndarray
    info: str
    tags: list[str]
    draft_offer: str = ""  # non-empty: a draft was restored and can be discarded
    history: list[list[Any]] = field(default_factory=list)
    can_undo: bool = False
    can_redo: bool = False


def image_key(user: str, name: str, base: str = "") -> str:
    """The editor's key: user, image and the version its strokes go over (``draft:<file>`` or ``saved``)."""
    return f"{user}/{name}@{base}"


def _base_token(draft: ann.Draft | None) -> str:
    return f"draft:{draft.versions[draft.position]}" if draft is not None else "saved"


def base_mask(t: ann.Target, key: str) -> np.ndarray:
    """The mask the editor was loaded with (its eraser puts it back): the draft version or saved mask named in
    ``key``."""
    token = key.rsplit("@", 1)[-1]
    draft = ann.read_draft(t.ws, t.user, t.name)
    if token.startswith("draft:") and draft is not None and token[6:] in draft.versions:
        index = draft.versions.index(token[6:])
        mask = ann.draft_mask(t.ws, t.user, t.name, ann.Draft(draft.versions, draft.sources, index))
        if mask is not None:
            return mask
    saved = ann.saved_mask(t)
    return saved if saved is not None else ann.blank_mask(t)


def _overlay(image: np.ndarray, mask: np.ndarray, opacity: float, edges: np.ndarray | None = None,
             clicks: list[tools.Click] | None = None) -> np.ndarray:
    """The photo with the mask's colours at ``opacity`` (unlabelled pixels: the photo), superpixel ``edges`` in
    yellow, clicks as green (+) / red (−) dots."""
    out = image.astype(np.float32)
    painted = mask != 255
    colours = VOC_PALETTE[mask].astype(np.float32)
    alpha = float(min(max(opacity, 0.0), 1.0))
    out[painted] = (1 - alpha) * out[painted] + alpha * colours[painted]
    if edges is not None:
        out[edges] = (255, 230, 0)
    result = out.clip(0, 255).astype(np.uint8)
    for c in clicks or []:
        y0, y1, x0, x1 = max(0, c.y - 2), c.y + 3, max(0, c.x - 2), c.x + 3
        result[y0:y1, x0:x1] = (0, 230, 0) if c.positive else (240, 0, 0)
    return result


def _history_rows(ws: Workspace, user: str, name: str) -> list[list[Any]]:
    rows = []
    for e in ann.read_history(ws, user, name):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(e.counts.items(), key=lambda kv: -kv[1])[:5])
        rows.append([e.version, e.action + (" (evaluation image)" if e.evaluation else ""), e.when, e.annotator,
                     e.source, e.changed, counts])
    return rows


def _info(t: ann.Target, state: str, draft: ann.Draft | None) -> str:
    role = ("**evaluation image** (val_all.txt): held out — a submitted mask updates its ground truth and it is "
            "never listed for training" if t.evaluation else
            "training image: a submitted mask is listed in `annotated.txt`")
    undo = f" · draft v{draft.position + 1}/{len(draft.versions)}" if draft is not None and draft.edited else ""
    tags = ", ".join(CLASS_NAMES[c] for c in t.record.tags) or "none"
    return f"**{t.name}** · {t.width}×{t.height} · state **{state}**{undo} · tags: {tags}  \n{role}"


def image_view(ws: Workspace, user: str, name: str, opacity: float = 0.5, tool: str = TOOLS[0],
               clicks: list[tools.Click] | None = None, offer: bool = False) -> AnnotateView:
    """The view of image ``name``: the draft if there is one (restored, with ``offer`` saying it can be
    discarded), else the saved mask, else nothing painted."""
    t = ann.target(ws, user, name)
    draft = ann.read_draft(ws, user, name)
    mask = ann.current_mask(t)
    image = load_image(t.record.image_path)
    edges = tools.superpixel_edges(tools.image_superpixels(t)) if tool == TOOLS[2] else None
    state = ann.image_state(ws, user, name)
    draft_offer = ""
    if offer and draft is not None and draft.edited:
        when = time.strftime("%H:%M:%S", time.localtime(draft.updated))
        draft_offer = (f"↺ **Restored your unsubmitted draft** of {name} (saved {when}, {len(draft.versions) - 1} "
                       f"edit(s): {', '.join(draft.provenance()) or 'manual'}). Keep editing, or discard it to go "
                       "back to the saved mask.")
    key = image_key(user, name, _base_token(draft))
    preview = _preview(image, mask, opacity, edges, clicks)
    return AnnotateView(key, editor_value(key, _overlay(image, mask, opacity)), preview, _info(t, state, draft),
                        [CLASS_NAMES[c] for c in t.record.tags], draft_offer,
                        _history_rows(ws, user, name), bool(draft and draft.can_undo), bool(draft and draft.can_redo))


def _preview(image: np.ndarray, mask: np.ndarray, opacity: float, edges: np.ndarray | None,
             clicks: list[tools.Click] | None) -> np.ndarray:
    """The click preview, enlarged by an integer factor for small photos (``preview_pixel`` maps clicks back)."""
    shown = _overlay(image, mask, opacity, edges, clicks)
    scale = int(display_size(image.shape[1], image.shape[0]).scale)
    return np.repeat(np.repeat(shown, scale, 0), scale, 1) if scale > 1 else shown


def preview_pixel(ws: Workspace, user: str, name: str, x: float, y: float) -> tuple[int, int]:
    """The image pixel under a click at (x, y) of the (possibly enlarged) preview."""
    t = ann.target(ws, user, name)
    scale = int(display_size(t.width, t.height).scale) if display_size(t.width, t.height).scale > 1 else 1
    return min(t.width - 1, int(x) // scale), min(t.height - 1, int(y) // scale)


def _check_key(user: str, name: str, key: str) -> None:
    if key.rsplit("@", 1)[0] != f"{user}/{name}":
        raise DatasetError("the editor still shows another image; wait until the chosen image has loaded")


def editor_value(key: str, shown: np.ndarray) -> dict[str, Any]:
    """The stroke editor's value: the key, the photo with the mask blended in as a PNG data URL (lossless: the
    blended class colours are what the annotator reads) and its size."""
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(shown[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DatasetError("could not encode the image for the editor")
    src = "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")
    return {"key": key, "src": src, "width": int(shown.shape[1]), "height": int(shown.shape[0])}


@dataclass(frozen=True)
class Saved:
    """What a stroke save did: ``pushed`` (a new draft version), the caption and the server's time."""

    pushed: bool
    message: str
    seconds: float


def save_stroke(ws: Workspace, user: str, name: str, key: str, stroke: Any) -> Saved:
    """Paint one stroke of the editor (``pss.api.annotate.Stroke`` JSON) into the image's newest draft version
    (nothing when it changes nothing: a stroke over its own class, or a retry of a stroke saved already).

    ``key`` is the image the editor was loaded with: a stroke that arrives for another image (the dropdown moved on
    while the editor still held the last one) is refused rather than written to the wrong image. The newest
    version is read and the new one pushed under the annotations' write lock, so two strokes never lose each
    other."""
    started = time.perf_counter()
    if not name or not key:
        raise DatasetError("a stroke needs the image and the editor key it was painted on (open the image first)")
    _check_key(user, name, key)
    parsed = ann.Stroke.parse(stroke)
    t = ann.target(ws, user, name)
    with ann.WRITE_LOCK:
        current = ann.current_mask(t)
        mask = ann.paint_stroke(current, base_mask(t, key), parsed)
        if np.array_equal(mask, current):
            return Saved(False, "stroke changed nothing", time.perf_counter() - started)
        draft = ann.push_version(t, mask, "manual")
    seconds = time.perf_counter() - started
    return Saved(True, f"draft saved {time.strftime('%H:%M:%S')} (v{draft.position + 1}, {seconds * 1000:.0f} ms)",
                 seconds)


def stroke_answer(ws: Workspace, payload: Any) -> dict[str, Any]:
    """The editor's server function: save the stroke of ``payload`` (a ``Stroke``'s JSON plus the editor ``key``,
    which names the user and image) and answer ``{"ok", "pushed", "message"}``; never raises (the page shows the
    message in its toolbar, a refusal in orange)."""
    try:
        key = str(payload.get("key") or "") if isinstance(payload, dict) else ""
        user, _, name = key.rsplit("@", 1)[0].partition("/")
        if not user or not name:
            raise DatasetError("the editor holds no image: pick one first")
        saved = save_stroke(ws, user, name, key, payload)
        return {"ok": True, "pushed": saved.pushed, "message": saved.message}
    except (DatasetError, OSError, ValueError) as exc:
        return {"ok": False, "pushed": False, "message": f"⚠ stroke not saved: {exc}"}


def saved_caption(ws: Workspace, user: str, name: str) -> str:
    """The caption after a stroke: the draft's newest version and when it was written."""
    draft = ann.read_draft(ws, user, name)
    if draft is None:
        return ""
    when = time.strftime("%H:%M:%S", time.localtime(draft.updated))
    return f"draft saved {when} (v{draft.position + 1})"


def undo_redo(ws: Workspace, user: str, name: str, delta: int, opacity: float, tool: str) -> AnnotateView:
    t = ann.target(ws, user, name)
    ann.step_draft(t, delta)
    return image_view(ws, user, name, opacity, tool)


def apply_prelabel(ws: Workspace, user: str, name: str, run_id: str, threshold: float, opacity: float,
                   tool: str) -> tuple[AnnotateView, str]:
    """Replace the mask with the run's tag-restricted pre-label (a new draft version: undo brings the old back)."""
    t = ann.target(ws, user, name)
    started = time.perf_counter()
    mask = tools.prelabel(ws, run_id, t, float(threshold))
    seconds = time.perf_counter() - started
    before = ann.read_draft(ws, user, name)
    after = ann.push_version(t, mask, f"prelabel:{run_id}")
    if before is not None and after.versions == before.versions or before is None and not after.versions:
        raise DatasetError(f"the pre-label of `{run_id}` at threshold {threshold:.2f} is the mask shown already "
                           "(at a high threshold an unsure model leaves every pixel unlabelled); lower the threshold")
    left = float((mask == 255).mean())
    allowed = ", ".join(CLASS_NAMES[c] for c in tools.allowed_classes(t.record.tags))
    note = "" if t.record.tags else " (the image has no tags: every class allowed; tag it to restrict)"
    return (image_view(ws, user, name, opacity, tool),
            f"pre-labelled from `{run_id}` with {allowed}{note}: {left:.0%} of pixels below {threshold:.2f} left "
            f"unlabelled ({seconds:.2f} s)")


def parse_clicks(text: str | None, key: str) -> tuple[list[tools.Click], int | None]:
    """The click session (clicks so far, its class) of image ``key`` from its JSON state; empty for another image."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        data = {}
    if data.get("key") != key.rsplit("@", 1)[0]:
        return [], None
    return [tools.Click(int(x), int(y), bool(p)) for x, y, p in data.get("clicks", [])], data.get("class_id")


def clicks_json(key: str, clicks: list[tools.Click], class_id: int | None) -> str:
    points = [[c.x, c.y, c.positive] for c in clicks]
    return json.dumps({"key": key.rsplit("@", 1)[0], "class_id": class_id, "clicks": points})


def click(ws: Workspace, user: str, name: str, key: str, tool: str, class_name: str, x: int, y: int,
          session: str | None, run_id: str | None, opacity: float) -> tuple[AnnotateView, str, str]:
    """One click on the preview at image pixel (x, y): GrabCut with every click of the session so far (seeded by
    the run's probabilities when a run is chosen), or fill the superpixel there. Returns the view, the new
    session state and a caption with the time it took."""
    _check_key(user, name, key)
    t = ann.target(ws, user, name)
    class_id = CLASS_NAMES.index(class_name) if class_name in CLASS_NAMES else None
    if class_id is None:
        raise DatasetError(f"choose the class to mark (one of {', '.join(CLASS_NAMES)})")
    mask = ann.current_mask(t)
    if tool == TOOLS[2]:
        started = time.perf_counter()
        mask = tools.fill_superpixel(mask, tools.image_superpixels(t), int(x), int(y), class_id)
        ann.push_version(t, mask, "superpixels")
        seconds = time.perf_counter() - started
        return (image_view(ws, user, name, opacity, tool), clicks_json(key, [], None),
                f"filled a superpixel with {class_name} ({seconds * 1000:.0f} ms)")
    clicks, session_class = parse_clicks(session, key)
    draft = ann.read_draft(ws, user, name)
    if session_class != class_id or draft is None or draft.sources[draft.position] != "clicks":
        clicks = []  # another class, or an edit since the last click: a new click session
    clicks = [*clicks, tools.Click(int(x), int(y), tool == TOOLS[0])]
    if len(clicks) > 1 and draft is not None and draft.can_undo:
        # refine from the mask before this session's first click, with all its clicks (not from the last result)
        mask, _ = ann.step_draft(t, -1)
    refined, seconds = tools.refine_with_run(ws, run_id or None, t, mask, class_id, clicks)
    ann.push_version(t, refined, "clicks")
    seeded = f"seeded by `{run_id}`" if run_id else "seeded by the mask (choose a run to seed with its model)"
    return (image_view(ws, user, name, opacity, tool, clicks), clicks_json(key, clicks, class_id),
            f"GrabCut {class_name}: {len(clicks)} click(s), {seeded}, {seconds:.2f} s")


def submit(ws: Workspace, user: str, name: str, key: str, annotator: str, opacity: float,
           tool: str) -> tuple[AnnotateView, str]:
    """Submit the image's newest draft version (or its mask) (``pss.api.annotate.submit``); the page sends every
    stroke before it sends this. A ``key`` naming another image is refused (an API client may pass none)."""
    if key:
        _check_key(user, name, key)
    t = ann.target(ws, user, name)
    done = ann.submit(ws, user, name, ann.current_mask(t), annotator or ann.DEFAULT_ANNOTATOR,
                      source=_source(ws, user, name))
    return image_view(ws, user, name, opacity, tool), ("✔ " + done.message)


def _source(ws: Workspace, user: str, name: str) -> str:
    draft = ann.read_draft(ws, user, name)
    return "+".join(draft.provenance()) if draft is not None and draft.provenance() else "manual"


def history_diff(ws: Workspace, user: str, name: str, version: float | None) -> str:
    if version is None:
        return ""
    diff = ann.diff_versions(ws, user, name, int(version))
    against = f"v{diff.previous}" if diff.previous is not None else "nothing (first version)"
    delta = ", ".join(f"{k} {v:+d}" for k, v in diff.delta.items()) or "no class changed its pixel count"
    return f"v{diff.version} against {against}: **{diff.changed}** pixels changed · {delta}"


# ---- the queue -----------------------------------------------------------------------------------------------------

def queue_rows(ws: Workspace, user: str, run_id: str | None, order: str, k: int) -> tuple[list[list[Any]], str]:
    """The queue as table rows and a caption; the uncertainty order without a run falls back to random (said)."""
    if not user:
        return [], ""
    note = ""
    chosen = order if order in ORDERS else "uncertainty"
    if chosen == "uncertainty" and not run_id:
        chosen, note = "random", "no run chosen: random order (choose a finished run for the uncertainty order)"
    items = tools.annotate_queue(ws, user, run_id or None, chosen, int(k))  # type: ignore[arg-type]
    states = ann.image_states(ws, user)
    rows = [[i + 1, item.name, states.get(item.name, ""), None if np.isnan(item.score) else round(item.score, 4),
             item.group, item.reason] for i, item in enumerate(items)]
    caption = f"{len(rows)} unlabelled training images (evaluation images are never queued)"
    return rows, "  \n".join(p for p in (caption, note) if p)


def next_in_queue(rows: list[list[Any]] | None, current: str | None) -> str:
    """The first queued image after ``current`` that is not submitted yet (wrapping around)."""
    names = [str(r[1]) for r in rows or [] if len(r) > 2 and r[2] not in ("submitted", "reviewed")]
    if not names:
        raise DatasetError("the queue is empty: refresh it (or every queued image is submitted)")
    if current in names:
        index = names.index(current)
        return names[(index + 1) % len(names)]
    return names[0]


# ---- fine-tune with the annotations --------------------------------------------------------------------------------

def _finetunes_file(ws: Workspace, user: str) -> Path:
    return ann.annotations_dir(ws, user) / "finetunes.jsonl"


def launch_finetune(ws: Workspace, user: str, start_run: str) -> tuple[str, str]:
    """Queue the fine-tune run through the job service (as the Runs tab does); returns (run id, message)."""
    request = tools.finetune_request(ws, start_run)
    if request.user != user:
        raise DatasetError(f"run {start_run} belongs to user {request.user}; pick a run of {user}")
    annotated = read_user(ws, user).annotated_train
    if not annotated:
        raise DatasetError(f"{user} has no annotated training image yet: submit masks of unlabelled images first")
    launched = job_service(ws).launch(request)
    path = _finetunes_file(ws, user)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:  # append-only, like the history
        handle.write(json.dumps({"start": start_run, "run": launched.run_id, "time": time.time(),
                                 "annotated": len(annotated)}) + "\n")
    return launched.run_id, (f"fine-tune run `{launched.run_id}` queued on `{launched.device}` from `{start_run}` "
                             f"with {len(annotated)} annotated image(s); the result appears here when it is done")


def latest_finetune(ws: Workspace, user: str) -> tuple[str, str] | None:
    """(start run, fine-tune run) of the user's last launch, or None."""
    path = _finetunes_file(ws, user)
    if not user or not path.is_file():
        return None
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        try:
            data = json.loads(line)
            return str(data["start"]), str(data["run"])
        except (ValueError, KeyError):
            continue
    return None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f}"


def finetune_result(ws: Workspace, start_run: str, run_id: str) -> tuple[str, bool]:
    """The before/after table of a fine-tune (FIoU/MIoU of the start run and of the new one on the user's
    evaluation images, read from the two runs' ``report.json``) and whether the new run has finished (or stopped)."""
    try:
        gain = tools.finetune_gain(ws, start_run, run_id)
    except DatasetError:
        return f"fine-tune run `{run_id}` (or its start run `{start_run}`) is not in this workspace any more", True
    before, after = gain.before, gain.after
    lines = [f"fine-tune `{run_id}`: **{after.status}**", "",
             "| | run | FIoU (%) | MIoU (%) | images scored |", "|---|---|---|---|---|",
             f"| before | `{start_run}` | {_pct(before.fiou)} | {_pct(before.miou)} | {len(before.images)} |",
             f"| after | `{run_id}` | {_pct(after.fiou)} | {_pct(after.miou)} | {len(after.images)} |",
             f"| gain | | {_signed(gain.gain('fiou'))} | {_signed(gain.gain('miou'))} | |", "",
             "Both are scored on the user's evaluation images (val_all.txt), which are never trained on. "
             "**Open both in Compare** to see them image by image."]
    if after.images and not gain.same_images:
        lines.append("")
        lines.append("⚠ the two reports scored different images (the evaluation list changed between the runs): "
                     "the gain is not a like-for-like comparison.")
    return "\n".join(lines), gain.finished


@dataclass
class CompareSelection:
    """What "Open both in Compare" puts in the Compare tab: its run choices with the two runs ticked, and an image."""

    run_choices: list[tuple[str, str]]
    runs: list[str]
    image_choices: list[tuple[str, str]]
    image: str | None


def finetune_compare(ws: Workspace, user: str, start_run: str, run_id: str, name: str | None,
                     image_choices: list[tuple[str, str]]) -> CompareSelection:
    """The Compare selection of a fine-tune: both runs ticked among the user's finished runs, the image being
    annotated when Compare lists it (else its first). ``image_choices``: Compare's image list (the caller's tab
    owns it). DatasetError while either run has not finished."""
    runs = run_choices(ws, user)[1:]
    listed = {v for _, v in runs}
    missing = [r for r in (start_run, run_id) if r not in listed]
    if missing:
        raise DatasetError(f"run {missing[0]} has not finished yet; open Compare when the fine-tune is done")
    values = [v for _, v in image_choices]
    return CompareSelection(runs, [start_run, run_id], image_choices,
                            name if name in values else (values[0] if values else None))


__all__ = ["HISTORY_COLUMNS", "ORDERS", "QUEUE_COLUMNS", "SHORTCUTS", "TAG_CHOICES", "TOOLS", "AnnotateView",
           "CompareSelection", "Saved", "apply_prelabel", "base_mask", "click", "clicks_json", "editor_value",
           "finetune_compare", "finetune_result", "history_diff", "image_choices", "image_key", "image_view",
           "latest_finetune", "launch_finetune", "next_in_queue", "parse_clicks", "preview_pixel", "queue_rows",
           "run_choices", "save_stroke", "saved_caption", "shortcuts_markdown", "stroke_answer", "submit", "undo_redo"]
