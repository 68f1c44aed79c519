"""The Annotate tab's mask editor: a ``gr.HTML`` component whose page script paints on a plain 2-D canvas and
sends each finished stroke (its points, brush size and class: a few hundred bytes) straight to the server with
``server_functions``, which paints it into the draft (``pss.api.annotate.paint_stroke``).

Why not Gradio's ImageEditor: after every stroke it exports background, layer and composite from its WebGL
canvas as PNGs and uploads all three before the save handler runs; on two cores that took 817 ms (median) from
mouse-up to the draft on disk, against a 300 ms target, while the server's own work was 4.5 ms
(``bench/annotate_browser_bench.py``). A stroke is also exact here: no antialiased rim to map back to a class.

Value (from the server): ``None`` (no image) or ``{"key", "src", "width", "height"}``: the editor key of the image
(the save refuses a stroke for another image), the photo with the current mask blended in (a data URL) and the
image's size. The canvas keeps the image's own pixel grid (CSS scales it), so a pointer position maps to image
pixels by the canvas's on-screen box alone. New strokes show on the canvas until the server sends the next value.

Strokes leave in order, one at a time; one the server did not answer is retried every 2 s (the status in the
toolbar says so), so nothing painted is dropped silently. ``window.pssStrokesSaved()`` resolves once every stroke
is saved: the Submit button awaits it before its request.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import gradio as gr

from pss.api import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, VOC_PALETTE

DEFAULT_CLASS = CLASS_NAMES.index("person")
DEFAULT_SIZE = 6  # brush diameter in image pixels (the demo's photos are 128 px wide)
MAX_SIZE = 40
MAX_HEIGHT_PX = 460  # the shown image's height limit (its width follows the aspect ratio)
EVENT_SAVED = "saved"  # the component's event after each stroke the server saved (the tab redraws the rest)

# (class id, name, colour): the 21 classes, then white = "unlabelled" (255)
SWATCHES: list[tuple[int, str, str]] = [
    *[(i, CLASS_NAMES[i], "#{:02x}{:02x}{:02x}".format(*VOC_PALETTE[i])) for i in range(NUM_CLASSES)],
    (IGNORE_INDEX, "unlabelled", "#ffffff")]


def _swatches_html() -> str:
    return "".join(f"<button type='button' class='pss-swatch-btn' data-class='{cid}' title='{html.escape(name)}'>"
                   f"<span class='pss-swatch' style='background:{colour}'></span>"
                   f"{'' if cid == IGNORE_INDEX else cid} {html.escape(name)}</button>"
                   for cid, name, colour in SWATCHES)


TEMPLATE = f"""
<div class="pss-stroke">
  <div class="pss-toolbar">
    <button type="button" class="pss-mode" data-mode="brush" title="B">Brush</button>
    <button type="button" class="pss-mode" data-mode="erase" title="E">Eraser</button>
    <label class="pss-size-label">size <input type="range" class="pss-size" min="1" max="{MAX_SIZE}" step="1">
      <span class="pss-size-text"></span> px</label>
    <span class="pss-status" id="annotate-stroke-status"></span>
  </div>
  ${{value && value.src ? `<div class="pss-stage"
      style="max-width:${{Math.round({MAX_HEIGHT_PX} * value.width / value.height)}}px">
      <img class="pss-photo" src="${{value.src}}" draggable="false" alt="">
      <canvas class="pss-paint" width="${{value.width}}" height="${{value.height}}"></canvas>
    </div>` : `<div class="pss-empty">Pick an image to paint its mask.</div>`}}
  <div class="pss-swatches">{_swatches_html()}</div>
  <div class="pss-help">Click a colour, then paint; <b>unlabelled</b> (white) makes pixels 255 (ignored in training),
    <b>background</b> (black) is what is not an object. The eraser takes back strokes made since the image was shown
    (the mask it had returns there). Keys: <b>B</b> brush, <b>E</b> eraser, <b>[</b> / <b>]</b> brush size.</div>
</div>
"""

CSS = """
.pss-stroke { display: flex; flex-direction: column; gap: 6px; }
.pss-toolbar { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; font-size: 13px; }
.pss-mode { padding: 2px 10px; border: 1px solid #999; border-radius: 4px; background: #fff; cursor: pointer; }
.pss-mode.pss-on { background: #2563eb; color: #fff; border-color: #2563eb; }
.pss-status { margin-left: auto; color: #444; }
.pss-status.pss-warn { color: #b45309; font-weight: 600; }
.pss-stage { position: relative; width: 100%; line-height: 0; touch-action: none; user-select: none; }
.pss-photo, .pss-paint { width: 100%; height: auto; image-rendering: pixelated; }
.pss-paint { position: absolute; left: 0; top: 0; height: 100%; opacity: 0.75; cursor: crosshair; }
.pss-empty { padding: 40px; text-align: center; color: #666; border: 1px dashed #bbb; }
.pss-swatches { display: flex; flex-wrap: wrap; gap: 4px; font-size: 12px; }
.pss-swatch-btn { display: inline-flex; align-items: center; gap: 3px; padding: 1px 6px 1px 2px; cursor: pointer;
  border: 1px solid #ccc; border-radius: 4px; background: #fff; }
.pss-swatch-btn.pss-on { border: 2px solid #2563eb; font-weight: 600; }
.pss-swatch { width: 14px; height: 14px; border: 1px solid #999; display: inline-block; }
.pss-help { font-size: 12px; color: #444; }
"""

# Runs once per page; the template re-renders (new canvas) whenever the server sends a value, so listeners sit on
# ``element`` and find the canvas at event time, and the tool state lives here.
JS = f"""
const COLOURS = {{{", ".join(f"{cid}: '{colour}'" for cid, _, colour in SWATCHES)}}};
const state = {{mode: 'brush', size: {DEFAULT_SIZE}, cls: {DEFAULT_CLASS}}};
const pending = [];  // finished strokes not yet saved, oldest first
let sending = false, stroke = null;

function paintCanvas() {{ return element.querySelector('canvas.pss-paint'); }}
function setStatus(text, warn) {{
  const s = element.querySelector('.pss-status');
  if (s) {{ s.textContent = text; s.classList.toggle('pss-warn', !!warn); }}
}}
function showTools() {{
  element.querySelectorAll('.pss-mode').forEach(b => b.classList.toggle('pss-on', b.dataset.mode === state.mode));
  element.querySelectorAll('.pss-swatch-btn').forEach(
    b => b.classList.toggle('pss-on', state.mode === 'brush' && Number(b.dataset.class) === state.cls));
  const range = element.querySelector('.pss-size');
  if (range) range.value = state.size;
  const text = element.querySelector('.pss-size-text');
  if (text) text.textContent = state.size;
}}
function imagePoint(ev, canvas) {{
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
}}
function draw(canvas, a, b) {{
  const ctx = canvas.getContext('2d');
  ctx.globalCompositeOperation = state.mode === 'erase' ? 'destination-out' : 'source-over';
  ctx.strokeStyle = ctx.fillStyle = COLOURS[stroke.class_id] || '#000';
  ctx.lineWidth = stroke.size; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
  ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  ctx.beginPath(); ctx.arc(b[0], b[1], stroke.size / 2, 0, 2 * Math.PI); ctx.fill();
}}
async function send() {{
  if (sending) return;
  sending = true;
  while (pending.length) {{
    const next = pending[0];
    setStatus(pending.length > 1 ? `saving… (${{pending.length}} strokes)` : 'saving…');
    let answer;
    // Gradio's client answers undefined (it only logs) when the request fails, so no answer = not saved
    try {{ answer = await server.save_stroke(next); }} catch (err) {{ answer = undefined; }}
    if (!answer || typeof answer.ok !== 'boolean') {{
      setStatus('⚠ stroke not saved yet (the server did not answer); retrying in 2 s', true);
      await new Promise(r => setTimeout(r, 2000));
      continue;
    }}
    pending.shift();
    setStatus(answer.message || '', !answer.ok);
    if (answer.pushed) trigger('{EVENT_SAVED}');
  }}
  sending = false;
}}
window.pssStrokesSaved = async () => {{ while (sending || pending.length) await new Promise(r => setTimeout(r, 25)); }};

element.addEventListener('pointerdown', (ev) => {{
  const canvas = ev.target.closest && ev.target.closest('canvas.pss-paint');
  if (!canvas || ev.button !== 0) return;
  ev.preventDefault();
  canvas.setPointerCapture(ev.pointerId);
  const p = imagePoint(ev, canvas);
  // the key of the value on screen (read here, not written into the HTML: an image name may hold any character)
  stroke = {{key: props.value && props.value.key, points: [p], size: state.size,
            class_id: state.mode === 'erase' ? null : state.cls}};
  draw(canvas, p, p);
}});
element.addEventListener('pointermove', (ev) => {{
  const canvas = paintCanvas();
  if (!stroke || !canvas) return;
  const p = imagePoint(ev, canvas), last = stroke.points[stroke.points.length - 1];
  if (Math.hypot(p[0] - last[0], p[1] - last[1]) < 0.5) return;  // sub-pixel moves add nothing
  stroke.points.push(p);
  draw(canvas, last, p);
}});
const finish = () => {{ if (!stroke) return; pending.push(stroke); stroke = null; send(); }};
element.addEventListener('pointerup', finish);
element.addEventListener('pointercancel', finish);
element.addEventListener('click', (ev) => {{
  const mode = ev.target.closest && ev.target.closest('.pss-mode');
  const swatch = ev.target.closest && ev.target.closest('.pss-swatch-btn');
  if (mode) state.mode = mode.dataset.mode;
  if (swatch) {{ state.cls = Number(swatch.dataset.class); state.mode = 'brush'; }}
  if (mode || swatch) showTools();
}});
element.addEventListener('input', (ev) => {{
  if (!ev.target.classList || !ev.target.classList.contains('pss-size')) return;
  state.size = Number(ev.target.value);
  showTools();
}});
document.addEventListener('keydown', (ev) => {{
  const t = ev.target;
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !paintCanvas() || element.offsetParent === null) return;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  const keys = {{b: () => {{ state.mode = 'brush'; }}, e: () => {{ state.mode = 'erase'; }},
                '[': () => {{ state.size = Math.max(1, state.size - 1); }},
                ']': () => {{ state.size = Math.min({MAX_SIZE}, state.size + 1); }}}};
  const action = keys[ev.key.toLowerCase()];
  if (action) {{ action(); showTools(); ev.preventDefault(); }}
}});
watch('value', showTools);
showTools();
"""

# Submit awaits the strokes still in flight, so it never submits a mask that lacks the last one.
AWAIT_STROKES_JS = "async (...args) => { if (window.pssStrokesSaved) await window.pssStrokesSaved(); return args; }"


def stroke_editor(save_stroke: Callable[[Any], dict[str, Any]], elem_id: str) -> gr.HTML:
    """The editor; ``save_stroke(stroke_json) -> {"ok", "pushed", "message"}`` is called from the page for each
    stroke (it must not raise: its answer is shown in the toolbar)."""
    return gr.HTML(None, html_template=TEMPLATE, css_template=CSS, js_on_load=JS, server_functions=[save_stroke],
                   elem_id=elem_id, apply_default_css=False)
