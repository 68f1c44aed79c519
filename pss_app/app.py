"""Assemble the Blocks app for one workspace and launch it with the project's serving rules.

Serving rules (DESIGN.md App, app_anchors §4.4-4.6):
- bind 127.0.0.1 unless told otherwise; optional ``auth``; ``run_history=False`` (private photos);
- files are served only from what pages show: ``allowed_paths`` are the workspace cache folders of rendered
  images (``served_paths``), ``WS/runs`` and ``WS/data`` are blocked, and Gradio's own upload/cache folders are
  moved under ``WS/cache`` too (``GRADIO_TEMP_DIR``), so nothing outside the workspace is reachable;
  Gradio resolves symlinks before its allowed-path check, so a link pointing outside is refused;
- plotly.js is copied from the installed ``plotly`` package into ``WS/cache/static`` (no CDN).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import gradio as gr
import plotly

from pss.api import Workspace, list_users
from pss.api import atomic_path
from pss_app.services.statistics import scope_choices
from pss_app.tabs import annotate as annotate_tab
from pss_app.tabs import compare as compare_tab
from pss_app.tabs import groups as groups_tab
from pss_app.tabs import images as images_tab
from pss_app.tabs import inspect as inspect_tab
from pss_app.tabs import quickstart as quickstart_tab
from pss_app.tabs import runs as runs_tab
from pss_app.tabs import statistics as statistics_tab
from pss_app.tabs.context import TabContext

log = logging.getLogger(__name__)

DEFAULT_K = 8
MAX_K = 80
CSS = """
.pss-legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 13px; }
.pss-legend-item { display: inline-flex; align-items: center; gap: 4px; }
.pss-swatch { width: 14px; height: 14px; border: 1px solid #555; display: inline-block; }
"""


def serve_from_workspace(ws: Workspace) -> None:
    """Point Gradio's upload/cache folders into ``WS/cache`` (must run before the Blocks are built)."""
    os.environ["GRADIO_TEMP_DIR"] = str(ws.cache / "gradio")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(ws.cache / "gradio-examples")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def install_plotly_js(ws: Workspace) -> Path:
    """Copy the installed plotly.js bundle into ``WS/cache/static`` (once per plotly version) and return it."""
    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    target = ws.cache / "static" / f"plotly-{plotly.__version__}.min.js"
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        # atomic: two apps starting on one workspace, or a page fetching it mid-copy, never see half a bundle
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return target


def shared_context(ws: Workspace, demo: gr.Blocks, default_k: int = DEFAULT_K, private: bool = False) -> TabContext:
    """Lay out the controls every tab shares (user, K, the status line) in ``demo`` and return the context the
    tabs are built with (``build_app``; tests that serve a single tab use it too)."""
    users = [] if private else list_users(ws)
    with gr.Row():
        user = gr.Dropdown(users, value=users[0] if users else None, label="User", elem_id="user",
                           allow_custom_value=True)  # users come and go; the services check the name
        k = gr.Slider(2, MAX_K, value=default_k, step=1, label="Groups K (k-means)", elem_id="k")
    status = gr.Markdown(elem_id="status")
    return TabContext(ws=ws, user=user, k=k, status=status, load=demo.load, users=users,
                      plotly_js=install_plotly_js(ws), private=private)


def build_app(ws: Workspace, default_k: int = DEFAULT_K, private: bool = False,
              annotator: str = "local") -> gr.Blocks:
    """The whole app for workspace ``ws`` (not launched). ``annotator``: the name the Annotate tab records as the
    author of submitted masks.

    ``private`` (with ``--auth``): no workspace data in the components' initial values. Gradio writes the API
    description, with every dropdown's choices and value, into the page it serves before login; the choices are
    filled by the page-load events instead, once the person has logged in.
    """
    serve_from_workspace(ws)
    with gr.Blocks(title="pss workbench", analytics_enabled=False) as demo:
        gr.Markdown("## pss · personalized semantic segmentation workbench"
                    + ("" if private else f"\nWorkspace `{ws.root}`"))
        ctx = shared_context(ws, demo, default_k, private)
        ctx.annotator = annotator or "local"
        # the one action for a newcomer: train the demo comparison of the user through the job queue
        quickstart_tab.build(ctx)
        with gr.Tabs(selected="images") as tabs:
            ctx.tabs = tabs  # before the tabs are built: they switch to each other
            images_tab.build(ctx)  # publishes ctx.images, which the Groups tab opens images in
            groups_tab.build(ctx)
            statistics_tab.build(ctx)
            runs_tab.build(ctx)  # also starts this workspace's job worker (reaping jobs left by a previous app)
            # Inspect / Compare list the user's finished runs when opened (runs finish while the app runs), so a
            # page load does not run a model for a tab nobody looks at.
            inspect_tab.build(ctx)
            compare_tab.build(ctx)  # publishes ctx.compare_pickers, which Annotate opens fine-tunes in
            annotate_tab.build(ctx)
        quickstart_tab.show_compare(ctx)
        scope = ctx.published("scope")

        def refresh_users(current: str | None):
            """Users may be added or removed while the app runs: refresh the choices on every page load.

            The value is only set when the current one is gone: setting it would fire ``user.change`` and could
            undo a pick the person made while the page was loading."""
            names = list_users(ws)
            if current in names or not names:
                return gr.Dropdown(choices=names), gr.Dropdown(choices=scope_choices(ws))
            return gr.Dropdown(choices=names, value=names[0]), gr.Dropdown(choices=scope_choices(ws))

        demo.load(refresh_users, ctx.user, [ctx.user, scope], api_name="users")
        # one status line serves every tab: a warning belongs to the tab it came from, so opening another clears
        # it (queue=False: before that tab's own handlers, which may write a new one)
        tabs.select(lambda: "", None, ctx.status, queue=False, show_progress="hidden", api_visibility="private")
    quiet_when_idle(demo)
    return demo


# Gradio's event queue polls for new events every 1 ms and for progress to send every 10 ms, with or without a
# browser: ~1,100 wake-ups a second that cost an idle app 6-7 % of a core (bench/idle_cost.py). Gradio itself polls
# every 50 ms / 100 ms on Windows; so do we: an event starts at most 50 ms later, invisible next to our handlers.
QUEUE_IDLE_POLL_S, QUEUE_PROGRESS_POLL_S = 0.05, 0.1


def quiet_when_idle(demo: gr.Blocks) -> None:
    """Slow the polling of ``demo``'s event queue to :data:`QUEUE_IDLE_POLL_S` / :data:`QUEUE_PROGRESS_POLL_S`.

    These are attributes of Gradio's ``queueing.Queue`` (read on every loop turn), not a public option; if a Gradio
    release renames them this does nothing and says so in the log rather than failing the app.
    """
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "sleep_when_free") or not hasattr(queue, "progress_update_sleep_when_free"):
        log.warning("gradio's queue has no polling intervals to slow down; the idle app will use more CPU")
        return
    queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_IDLE_POLL_S)
    queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, QUEUE_PROGRESS_POLL_S)


def launch_kwargs(ws: Workspace, host: str = "127.0.0.1", port: int | None = None,
                  auth: tuple[str, str] | None = None, quiet: bool = False) -> dict:
    """Keyword arguments of ``Blocks.launch`` implementing the serving rules above."""
    return dict(server_name=host, server_port=port, auth=auth, allowed_paths=served_paths(ws),
                blocked_paths=[str(ws.runs), str(ws.data)], run_history=False, css=CSS, quiet=quiet,
                head=annotate_tab.SHORTCUT_JS,
                show_error=False, max_file_size="20mb", inbrowser=False)


# The folders whose files pages show: thumbnails, rendered views, maps and comparisons, CSV exports, plotly.js.
# Everything else (run directories with checkpoints and the SQLite index, the data, feature caches) is never
# served directly; what a handler returns is copied into Gradio's cache (WS/cache/gradio), served from there.
SERVED_CACHE_DIRS = ("thumbs", "views", "inference", "compare", "exports", "static")


def served_paths(ws: Workspace) -> list[str]:
    """``allowed_paths``: the cache folders of ``SERVED_CACHE_DIRS`` (created, so Gradio can resolve them)."""
    paths = []
    for name in SERVED_CACHE_DIRS:
        folder = ws.cache / name
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(str(folder))
    return paths
