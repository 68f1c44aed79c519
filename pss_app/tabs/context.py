"""What every tab's ``build(ctx)`` receives: one :class:`TabContext`, made once by ``pss_app.app``.

The context carries the workspace and the controls all tabs share (the user picker, K, the one status/warning
line, the page-load event); tabs publish the components other tabs wire into on it (the Images tab's image and
group pickers, the quick-start banner, the Statistics scope), so no tab takes another's components by position.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from pss.api import JobService, Workspace, job_service

if TYPE_CHECKING:  # pragma: no cover - typing only (those modules import this one)
    from pss_app.tabs.images import ImagesTab
    from pss_app.tabs.quickstart import QuickstartBanner


@dataclass
class TabContext:
    """The workspace and the shared controls, plus what tabs publish for each other (``None`` until built)."""

    ws: Workspace
    user: gr.Dropdown  # the user every tab shows (above the tabs)
    k: gr.Slider  # K of the k-means groups (Images' group filter, Groups)
    status: gr.Markdown  # the one status/warning line: a handler's ``⚠ ...`` goes here
    load: Callable[..., Any]  # ``Blocks.load``: register an event on page load (also a ``gr.on`` trigger)
    users: list[str]  # the user names the components start with ([] when ``private``)
    plotly_js: Path  # the plotly.js bundle served from the workspace (Groups' scatter)
    private: bool = False  # with auth: no workspace data in initial values (see ``pss_app.app.build_app``)
    tabs: gr.Tabs | None = None  # set by ``build_app`` once the tab strip exists: tabs switch to each other
    images: ImagesTab | None = None  # published by the Images tab: opening an image, the group filter
    banner: QuickstartBanner | None = None  # published by the quick-start banner: "Open Compare"
    scope: gr.Dropdown | None = None  # published by the Statistics tab: refreshed with the users on page load
    compare_pickers: tuple[gr.CheckboxGroup, gr.Dropdown] | None = None  # published by Compare: (runs, image)
    annotator: str = "local"  # who the Annotate tab records as the author of a submitted mask (``--annotator``)

    @property
    def jobs(self) -> JobService:
        """The workspace's job service, started on first use (worker thread + reaping of jobs left behind).

        Looked up on every use rather than kept: ``pss.api.jobs.stop_job_service`` may replace it while the app runs."""
        return job_service(self.ws)

    def published(self, name: str) -> Any:
        """The component(s) another tab published as ``name``; RuntimeError naming the build order if it has not
        been built yet (a wiring bug in ``build_app``, not a user error)."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"the tab context has no {name!r} yet: build the tab that publishes it first")
        return value


def tab_page(label: str, tab_id: str) -> gr.Tab:
    """The ``gr.Tab`` of one tab: ``id`` (what ``gr.Tabs(selected=...)`` names) and ``elem_id`` ``tab-<id>``."""
    return gr.Tab(label, id=tab_id, elem_id=f"tab-{tab_id}")
