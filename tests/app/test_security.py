"""Serving rules, checked against the running server: only workspace files, 127.0.0.1, auth, no run history."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from pss.api import Workspace, read_user, thumbnail
from pss_app.__main__ import parser
from pss_app.app import serve_from_workspace
from support import raw_get

SECRET = "TOP-SECRET-NOT-IN-THE-WORKSPACE"


@pytest.fixture(scope="module")
def outside(workspace: Workspace) -> Iterator[Path]:
    """A secret file next to (not inside) the workspace, and links to it from inside the workspace."""
    folder = workspace.root.parent / "outside"
    folder.mkdir(exist_ok=True)
    secret = folder / "secret.txt"
    secret.write_text(SECRET)
    links = workspace.cache / "links"
    links.mkdir(exist_ok=True)
    for link, target in ((links / "secret-link.txt", secret), (links / "outside-dir", folder)):
        if not link.is_symlink():
            link.symlink_to(target)
    yield secret
    for link in (links / "secret-link.txt", links / "outside-dir"):
        link.unlink(missing_ok=True)


def test_a_workspace_file_is_served(app) -> None:
    record = read_user(app.ws, "id1").records[0]
    thumb = thumbnail(app.ws, record.image_path)
    status, body = raw_get(app.url, "/gradio_api/file=" + quote(str(thumb)))
    assert status == 200 and body == thumb.read_bytes()


@pytest.mark.parametrize("make_path", [
    lambda ws, secret: str(secret),                                                   # absolute path
    lambda ws, secret: "/etc/passwd",
    lambda ws, secret: f"{ws.root}/cache/../../outside/secret.txt",                   # .. out of the workspace
    lambda ws, secret: f"{ws.root}/cache/%2e%2e/%2e%2e/outside/secret.txt",           # encoded ..
    lambda ws, secret: f"{ws.root}/../outside/secret.txt",
    lambda ws, secret: f"{ws.root}/cache/links/secret-link.txt",                      # symlink to a file outside
    lambda ws, secret: f"{ws.root}/cache/links/outside-dir/secret.txt",               # symlinked folder
    lambda ws, secret: "outside/secret.txt",                                          # relative to the CWD
], ids=["absolute", "etc-passwd", "dotdot", "encoded-dotdot", "root-dotdot", "symlink-file", "symlink-dir",
        "relative"])
def test_files_outside_the_workspace_are_refused(app, outside: Path, make_path) -> None:
    path = make_path(app.ws, outside)
    for route in ("/gradio_api/file=", "/gradio_api/file/", "/file="):
        status, body = raw_get(app.url, route + path)
        assert status in (403, 404), f"{route}{path} -> {status}"
        assert SECRET.encode() not in body and b"root:" not in body


def test_gradio_cache_lies_inside_the_workspace(app, client) -> None:
    # GRADIO_TEMP_DIR is per process (one app per process in production); other app fixtures of this pytest
    # session set it to their own workspace, so point it back at this app's workspace as its launch did.
    serve_from_workspace(app.ws)
    assert Path(os.environ["GRADIO_TEMP_DIR"]).is_relative_to(app.ws.cache)
    from gradio_client import Client

    raw = Client(app.url, verbose=False, download_files=False)
    gallery, *_ = raw.predict("id1", 4, "all", "all", "all", api_name="/gallery_first_page")
    raw.close()
    for item in gallery:  # what the browser is told to fetch: copies under WS/cache/gradio
        assert Path(item["image"]["path"]).is_relative_to(app.ws.cache / "gradio")


def test_binds_localhost_and_disables_run_history(app) -> None:
    assert urlsplit(app.url).hostname == "127.0.0.1"
    assert parser().parse_args([]).host == "127.0.0.1"
    config = httpx.get(app.url + "config", timeout=30).json()
    assert config["run_history"] is False


def test_the_running_queue_polls_slowly_when_idle(app, client) -> None:
    """Gradio's 1 ms / 10 ms polling cost an idle app 6-7 % of a core; the launched app's queue is slowed (and the
    queue still answers: a call made after the change returns)."""
    from pss_app.app import QUEUE_IDLE_POLL_S, QUEUE_PROGRESS_POLL_S

    queue = app.demo._queue
    assert queue.sleep_when_free == QUEUE_IDLE_POLL_S == 0.05
    assert queue.progress_update_sleep_when_free == QUEUE_PROGRESS_POLL_S == 0.1
    assert client.predict(None, api_name="/users")


def test_auth_is_required_when_set(workspace: Workspace, port: int, tmp_path_factory) -> None:
    from gradio_client import Client

    from pss_app.app import build_app, launch_kwargs

    demo = build_app(workspace, default_k=4)
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(workspace, "127.0.0.1", port,
                                                                      ("ann", "s3cret"), quiet=True))
    try:
        thumb = thumbnail(workspace, read_user(workspace, "id1").records[0].image_path)
        status, _ = raw_get(url, "/gradio_api/file=" + quote(str(thumb)))
        assert status in (401, 403)
        assert httpx.get(url + "config", timeout=30).status_code in (401, 403)
        bad = httpx.post(url + "login", data={"username": "ann", "password": "wrong"}, timeout=30)
        assert bad.status_code in (400, 401)
        client = Client(url, auth=("ann", "s3cret"), verbose=False,
                        download_files=str(tmp_path_factory.mktemp("auth-downloads")))
        gallery, *_ = client.predict("id1", 4, "all", "all", "all", api_name="/gallery_first_page")
        assert len(gallery) == 48
        client.close()
    finally:
        demo.close()
