"""Fixtures of the app tests: one small demo workspace and one running app per test session.

The demo (2 users x 50 images) is generated once; the app is launched in-process on a free port with the
same launch arguments as ``pss-app`` (allowed_paths=[WS], run_history=False, 127.0.0.1).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pss.api import Workspace, create_demo_workspace
from pss.data.demo import DemoConfig
from support import free_port

DEMO = DemoConfig(num_source=20, num_users=2, images_per_user=50)
K = 4  # small K: 50 images per user


@pytest.fixture()
def port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_port()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws, summary = create_demo_workspace(tmp_path_factory.mktemp("app") / "ws", seed=0, config=DEMO)
    assert summary is not None and summary.users == ["id1", "id2"]
    return ws


@dataclass
class RunningApp:
    ws: Workspace
    url: str
    demo: object


@pytest.fixture(scope="session")
def app(workspace: Workspace) -> Iterator[RunningApp]:
    from pss_app.app import build_app, launch_kwargs

    demo = build_app(workspace, default_k=K)
    kwargs = launch_kwargs(workspace, "127.0.0.1", free_port(), None, quiet=True)
    _, url, _ = demo.launch(prevent_thread_lock=True, **kwargs)
    yield RunningApp(workspace, url, demo)
    demo.close()


@pytest.fixture(scope="session")
def client(app: RunningApp, tmp_path_factory: pytest.TempPathFactory):
    from gradio_client import Client

    downloads = tmp_path_factory.mktemp("client-downloads")
    c = Client(app.url, verbose=False, download_files=str(downloads))
    yield c
    c.close()


@pytest.fixture()
def extra_user(workspace: Workspace) -> Iterator[tuple[str, Path]]:
    """A throw-away user ``id9`` (a copy of id1's first 6 images + tags), removed after the test."""
    import shutil

    source = workspace.personal / "id1"
    target = workspace.personal / "id9"
    (target / "JPEGImages").mkdir(parents=True)
    (target / "SegmentationClass").mkdir()
    images = sorted((source / "JPEGImages").iterdir())[:6]
    lines = []
    tags = {line.split(":")[0]: line for line in (source / "imgLabelList.txt").read_text().splitlines() if line}
    for image in images:
        shutil.copy2(image, target / "JPEGImages" / image.name)
        mask = source / "SegmentationClass" / f"{image.stem}.png"
        if mask.exists():
            shutil.copy2(mask, target / "SegmentationClass" / mask.name)
        lines.append(tags[image.name])
    (target / "imgLabelList.txt").write_text("\n".join(lines) + "\n")
    yield "id9", target
    shutil.rmtree(target, ignore_errors=True)
