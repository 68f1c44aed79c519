"""Fixtures of the reliability suite: one small demo workspace per session, copied for each test that breaks it.

Every fault is planted in a copy (``fresh_ws``), so a test that corrupts files never affects another test; the
copy is cheap (2 users x 16 images, 12 source images: ~2 MB).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from pss.api import Workspace, create_demo_workspace, open_workspace
from pss.data.demo import DemoConfig

sys.path.insert(0, str(Path(__file__).parent))  # fuzzing.py, shared with bench/endpoint_fuzz.py

SMALL = DemoConfig(num_source=12, num_users=2, images_per_user=16)


@pytest.fixture(scope="session")
def base_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The pristine small demo (never modified: tests copy it)."""
    ws, summary = create_demo_workspace(tmp_path_factory.mktemp("reliability") / "ws", seed=0, config=SMALL)
    assert summary is not None and summary.users == ["id1", "id2"]
    return ws


@pytest.fixture()
def fresh_ws(base_ws: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of the small demo for a test that plants faults in it."""
    root = tmp_path / "ws"
    shutil.copytree(base_ws.root, root, symlinks=True)
    return open_workspace(root)
