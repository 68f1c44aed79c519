"""Shared setup of the Inspect / Compare tests: a tiny workspace with two finished runs, and the app on it.

``trained_workspace`` builds it once per test process (whichever test module asks first): a demo of 2 users x
12 images, then two 2-step runs of user id1 trained in-process with the ``tiny`` preset — ``pss`` (group
region context, so attention exists) and ``source_only`` (no context).
"""
from __future__ import annotations

from dataclasses import dataclass

from pss.data.demo import DemoConfig, generate_demo
from pss.workspace import Workspace
from support import free_port

DEMO = DemoConfig(num_source=16, num_users=2, images_per_user=12)
USER = "id1"


@dataclass
class TrainedWorkspace:
    ws: Workspace
    pss_run: str
    source_run: str


_BUILT: dict[str, TrainedWorkspace] = {}


def trained_workspace(tmp_path_factory) -> TrainedWorkspace:
    if "ws" not in _BUILT:
        from pss.api.runs import make_config, train

        root = tmp_path_factory.mktemp("inspect") / "ws"
        generate_demo(root / "data", seed=0, config=DEMO)
        ws = Workspace(root)
        runs = {}
        for method in ("source_only", "pss"):
            config = make_config(ws, "tiny", [f"method.name={method}", "train.steps=2", f"data.user={USER}"])
            runs[method] = train(ws, config, device="cpu", console=False).run_id
        ws.cache.mkdir(parents=True, exist_ok=True)
        _BUILT["ws"] = TrainedWorkspace(ws, runs["pss"], runs["source_only"])
    return _BUILT["ws"]


def launch(ws: Workspace, default_k: int | None = None):
    """(demo, url) of the whole app served on a free port with the app's launch rules."""
    from pss_app.app import DEFAULT_K, build_app, launch_kwargs

    demo = build_app(ws, default_k=default_k or DEFAULT_K)
    for attempt in range(3):
        try:
            _, url, _ = demo.launch(prevent_thread_lock=True,
                                    **launch_kwargs(ws, "127.0.0.1", free_port(), None, quiet=True))
            return demo, url
        except ValueError as exc:  # Gradio's 3-second start-up probe of "/" can time out on a saturated machine
            demo.close()
            if "localhost is not accessible" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")
