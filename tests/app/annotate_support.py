"""Shared setup of the Annotate tests: a copy of the Inspect tests' tiny trained workspace (two finished runs of
``id1``), so that the masks, lists and drafts these tests write never reach the Inspect / Compare tests that share
the original in one test process."""
from __future__ import annotations

import shutil

from inspect_support import USER, TrainedWorkspace, trained_workspace
from pss.api.inspect import clear_caches
from pss.workspace import Workspace

_COPIES: dict[str, TrainedWorkspace] = {}


def annotate_workspace(tmp_path_factory, name: str = "annotate") -> TrainedWorkspace:
    """A private copy (per ``name``, made once per test process) of ``trained_workspace``."""
    if name not in _COPIES:
        original = trained_workspace(tmp_path_factory)
        root = tmp_path_factory.mktemp(name) / "ws"
        shutil.copytree(original.ws.root, root, ignore=shutil.ignore_patterns("gradio", "*.lock"))
        clear_caches(keep_models=True)
        _COPIES[name] = TrainedWorkspace(Workspace(root), original.pss_run, original.source_run)
    return _COPIES[name]


__all__ = ["USER", "annotate_workspace"]
