"""A plotly scatter plot inside a ``gr.HTML`` component that reports clicks and lasso selections.

Why not ``gr.Plot``: in Gradio 6 it only has a ``change`` event (no click, no lasso), and the native
``gr.ScatterPlot`` can only brush an x-interval (app_anchors §4.2). This component draws the figure
with plotly.js itself and calls ``trigger('select', data)`` so Python receives:

- a click on a point: ``{"kind": "point", "name": <image name>, "group": <group id>}``
- a lasso/box selection: ``{"kind": "lasso", "names": [<image name>, ...]}``

plotly.js is served from the workspace (copied there from the installed ``plotly`` package), never
from a CDN, so the app works offline and only serves files under the workspace.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import gradio as gr

_TEMPLATE = """
<div class="pss-scatter-wrap">
  <div class="pss-scatter"></div>
  <div class="pss-hover" style="display:none"><img alt=""/><div class="pss-hover-name"></div></div>
  <div class="pss-empty">${value ? '' : 'Choose a user and compute groups to see the UMAP scatter.'}</div>
</div>
"""

_CSS = """
.pss-scatter-wrap { position: relative; width: 100%; }
.pss-scatter { width: 100%; height: 520px; }
.pss-hover { position: absolute; top: 8px; left: 8px; background: var(--background-fill-primary, #fff);
  border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px; padding: 4px; pointer-events: none;
  z-index: 10; text-align: center; font-size: 12px; }
.pss-hover img { max-width: 140px; max-height: 140px; display: block; }
.pss-empty { color: var(--body-text-color-subdued, #888); padding: 8px; }
"""

# Runs once when the component mounts; `watch` re-renders when Python sends a new figure.
_JS = """
const plot = element.querySelector('.pss-scatter');
const hover = element.querySelector('.pss-hover');
const hoverImg = hover.querySelector('img');
const hoverName = hover.querySelector('.pss-hover-name');
let bound = false;
function bind() {
  if (bound) return;
  bound = true;
  plot.on('plotly_click', (ev) => {
    if (!ev || !ev.points || !ev.points.length) return;
    const cd = ev.points[0].customdata;
    trigger('select', {index: cd[1], value: {kind: 'point', name: cd[0], group: cd[1]}});
  });
  plot.on('plotly_selected', (ev) => {
    // only lasso/box selections: a click also reports a one-point "selection", but a click picks a group
    if (!ev || !ev.points || (!ev.lassoPoints && !ev.range)) return;
    const names = ev.points.map((p) => p.customdata[0]);
    trigger('select', {index: names.length, value: {kind: 'lasso', names: names}});
  });
  plot.on('plotly_hover', (ev) => {
    if (!ev || !ev.points || !ev.points.length) return;
    const cd = ev.points[0].customdata;
    hoverName.textContent = cd[0] + ' (group ' + cd[1] + ')';
    if (cd[2]) { hoverImg.src = cd[2]; hoverImg.style.display = 'block'; } else { hoverImg.style.display = 'none'; }
    // next to the pointer, on the side with room, so the box never hides the hovered point
    const box = element.getBoundingClientRect();
    const mouse = ev.event || {clientX: box.left, clientY: box.top};
    let x = mouse.clientX - box.left + 18, y = mouse.clientY - box.top + 18;
    if (x + 160 > box.width) x = Math.max(0, x - 196);
    if (y + 180 > box.height) y = Math.max(0, y - 216);
    hover.style.left = x + 'px';
    hover.style.top = y + 'px';
    hover.style.display = 'block';
  });
  plot.on('plotly_unhover', () => { hover.style.display = 'none'; });
}
function render() {
  if (!props.value || typeof Plotly === 'undefined') {
    if (typeof Plotly !== 'undefined') Plotly.purge(plot);
    bound = false;
    return;
  }
  const fig = JSON.parse(props.value);
  Plotly.react(plot, fig.data, fig.layout, {displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ['toImage']}).then(bind);
}
watch('value', render);
render();
"""


def plotly_js_url(static_file: Path) -> str:
    """URL of a file under the workspace, served by Gradio's file route (relative to the page)."""
    return "gradio_api/file=" + quote(str(static_file))


def scatter_component(plotly_js: Path, elem_id: str = "umap-scatter") -> gr.HTML:
    """A ``gr.HTML`` that renders a plotly figure JSON string (``fig.to_json()``) given as its value."""
    return gr.HTML(
        value="",
        html_template=_TEMPLATE,
        css_template=_CSS,
        js_on_load=_JS,
        head=f'<script src="{plotly_js_url(plotly_js)}"></script>',
        elem_id=elem_id,
        apply_default_css=False,
    )
