"""The running app under bad input: every endpoint answers bad values with a message (fuzzed from the app's own API
description), a broken user does not blank the others, only what pages show can be downloaded, the login page
carries no workspace data, and a killed app comes back with every run listed. Data is never changed."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from fuzzing import fuzz
from support import free_port, raw_get
from pss.api import Workspace, open_workspace, read_user, thumbnail

K = 4
# Bad values per parameter in CI (None, empty, wrong type, then a rotating pick); bench/endpoint_fuzz.py runs all.
CI_VALUES_PER_PARAM = 3


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def broken_ws(base_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The small demo plus a broken user ``id3`` (a folder without ``JPEGImages/``) and a run with a checkpoint."""
    root = tmp_path_factory.mktemp("app-faults") / "ws"
    shutil.copytree(base_ws.root, root, symlinks=True)
    ws = open_workspace(root)
    (ws.personal / "id3").mkdir()
    (ws.personal / "id3" / "imgLabelList.txt").write_text("a.jpg:dog\n")
    run = ws.store().create_run("id1", "source_only", {"train": {"steps": 1}}, "cpu", 1)
    (run.dir / "checkpoints").mkdir(exist_ok=True)
    (run.dir / "checkpoints" / "step_1.pt").write_bytes(b"CHECKPOINT-BYTES")
    run.set_status("done", fiou=0.1, miou=0.1)
    return ws


@pytest.fixture(scope="module")
def app(broken_ws: Workspace) -> Iterator[tuple[str, object]]:
    from pss_app.app import build_app, launch_kwargs

    demo = build_app(broken_ws, default_k=K)
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(broken_ws, "127.0.0.1", free_port(), None,
                                                                       quiet=True))
    yield url, demo
    demo.close()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory: pytest.TempPathFactory):
    from gradio_client import Client

    c = Client(app[0], verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield c
    c.close()


def test_every_endpoint_answers_bad_values_with_a_specific_message(client, broken_ws: Workspace,
                                                                    monkeypatch) -> None:
    from pss.api.jobs import job_service
    from pss.runs.worker import Worker

    monkeypatch.setattr(Worker, "run_once", lambda self: [])  # a launch the fuzz gets accepted must not train
    data_before = _snapshot(broken_ws.data)
    report = fuzz(client, limit=CI_VALUES_PER_PARAM, overrides={"/launch_run": {"preset_name": "tiny"}})
    queue = job_service(broken_ws).queue
    for job in queue.list_jobs(status="queued"):  # accepted launches: never run them
        queue.cancel(job.job_id)
    endpoints = {o.param.endpoint for o in report.outcomes}
    assert len(endpoints) >= 30 and "/launch_run" in endpoints and "/statistics" in endpoints
    generic = [f"{o.param.endpoint} {o.param.name}={o.bad.label}: {o.message}" for o in report.generic_from_app()]
    assert generic == [], report.summary() + "\n" + "\n".join(generic)
    assert _snapshot(broken_ws.data) == data_before  # bad input changed no data
    gallery, *_ = client.predict("id1", K, "all", "all", "all", api_name="/gallery_first_page")
    assert len(gallery) == 16  # the server still serves


def test_empty_run_ids_and_wrong_types_say_what_is_wrong(client) -> None:
    for endpoint in ("/cancel_run", "/resume_run"):
        assert client.predict("", api_name=endpoint).startswith("⚠ no run selected: pick a run in the history")
    *_, status = client.predict("", api_name="/delete_run")
    assert status.startswith("⚠ no run selected")
    *_, status = client.predict(37, K, "all", "all", "all", api_name="/gallery_first_page")
    assert status == "⚠ user name: expected text (a name or id), got 37 (int)"


def test_an_unknown_image_name_gets_a_message_not_a_blank_view(client) -> None:
    *_, status = client.predict("id1", "no-such-image", 0.5, api_name="/image_view")
    assert "user 'id1' has no image named 'no-such-image'" in status


def test_a_broken_user_does_not_blank_the_statistics_of_the_others(client) -> None:
    *figures, summary, status = client.predict("all users", api_name="/statistics")
    assert summary.startswith("statistics of id1, id2")
    assert "user id3 left out" in summary and "JPEGImages" in summary
    assert all(figure is not None for figure in figures)


def test_only_what_pages_show_can_be_downloaded(app, broken_ws: Workspace) -> None:
    url, _ = app
    record = read_user(broken_ws, "id1").records[0]
    thumb = thumbnail(broken_ws, record.image_path)
    assert raw_get(url, "/gradio_api/file=" + quote(str(thumb)))[0] == 200  # what the gallery and scatter show
    run_dir = next(p for p in broken_ws.runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    refused = [broken_ws.runs / "index.sqlite", run_dir / "checkpoints" / "step_1.pt", run_dir / "config.yaml",
               run_dir / "run.json", record.image_path, broken_ws.personal / "id1" / "imgLabelList.txt",
               broken_ws.data / "VOC2012" / "list" / "train_aug.txt"]
    for path in refused:
        for route in ("/gradio_api/file=", "/gradio_api/file/", "/file="):
            status, body = raw_get(url, route + quote(str(path)))
            assert status in (403, 404), f"{route}{path} -> {status}"
            assert b"CHECKPOINT-BYTES" not in body and b"SQLite format" not in body


def test_the_login_page_carries_no_workspace_data(broken_ws: Workspace) -> None:
    from pss_app.app import build_app, launch_kwargs

    demo = build_app(broken_ws, default_k=K, private=True)
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(broken_ws, "127.0.0.1", free_port(),
                                                                      ("ann", "s3cret"), quiet=True))
    try:
        page = httpx.get(url, timeout=30).text  # the login page, with Gradio's embedded API description
        run_ids = [r.run_id for r in broken_ws.store().list_runs()]
        leaked = [word for word in ["id1", "id2", "id3", str(broken_ws.root), *run_ids] if word in page]
        assert leaked == []
        assert "gradio_api_info" in page  # the description is there, only emptied of workspace values
    finally:
        demo.close()


def test_opening_a_tab_clears_the_status_line(app) -> None:
    _, demo = app
    status = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "status")
    tabs = [b for b in demo.blocks.values() if type(b).__name__ == "Tabs"]
    clearing = [fn for fn in demo.fns.values()
                if any(target[0] in {t._id for t in tabs} and target[1] == "select" for target in fn.targets)
                and [o._id for o in fn.outputs] == [status._id]]
    assert clearing and clearing[0].fn() == ""


def test_a_killed_app_comes_back_with_every_run_listed(broken_ws: Workspace, tmp_path: Path) -> None:
    """kill -9 of the app process: nothing is lost, and the next app lists the runs again."""
    from gradio_client import Client

    data_before = _snapshot(broken_ws.data)
    runs_before = sorted(r.run_id for r in broken_ws.store().list_runs())

    def serve() -> tuple[subprocess.Popen, str]:
        port = free_port()
        env = {**os.environ, "PSS_WARM_JOBS": "0"}
        proc = subprocess.Popen([sys.executable, "-m", "pss_app", "--workspace", str(broken_ws.root), "--port",
                                 str(port), "--k", str(K)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "config", timeout=5).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                time.sleep(0.5)
        proc.kill()
        raise AssertionError("the app did not start within 120 s")

    proc, url = serve()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc, url = serve()
    try:
        client = Client(url, verbose=False, download_files=False)
        table = client.predict("", "all", "all", "all", api_name="/run_history")
        listed = sorted(row[-1] for row in table["data"])
        client.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert listed == runs_before
    assert _snapshot(broken_ws.data) == data_before
