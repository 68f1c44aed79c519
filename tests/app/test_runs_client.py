"""The Runs tab through ``gradio_client``: launch → done with metrics, cancel, kill -9 while the app serves,
two launches queue, a new app object over the same workspace lists every run.

Real ``pss train`` jobs on a tiny demo workspace (``tiny`` preset, ``source_only``: no grouping). Deadlines
only stop a broken test from hanging; nothing asserts on how long anything took.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import gradio as gr
import pytest

from pss.api import Workspace, create_demo_workspace
from pss.api.jobs import job_service, stop_job_service
from pss.data.demo import DemoConfig
from pss.runs.procs import process_alive
from pss_app.app import launch_kwargs, shared_context
from pss_app.tabs import runs as runs_tab
from support import free_port, wait_for

TINY = DemoConfig(num_source=16, num_users=2, images_per_user=12)
RUN_ENDPOINTS = {"/launch_run", "/run_view", "/runs_poll", "/cancel_run", "/resume_run", "/delete_run",
                 "/run_history", "/runs_choices", "/runs_preset_defaults", "/runs_context_choices"}
HEADER, LOSSES, METRICS, STATE = 0, 2, 4, 8  # indices in the run view's outputs


def runs_app(ws: Workspace) -> gr.Blocks:
    """An app holding only the Runs tab (what ``pss_app.app.build_app`` puts in its Runs tab), under the shared
    controls every tab is built with (they add no endpoint)."""
    with gr.Blocks() as demo:
        runs_tab.build(shared_context(ws, demo))
    return demo


def serve(demo: gr.Blocks, ws: Workspace) -> str:
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(ws, "127.0.0.1", free_port(), None,
                                                                       quiet=True))
    return url


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace, _ = create_demo_workspace(tmp_path_factory.mktemp("runs-app") / "ws", seed=0, config=TINY)
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # jobs share two cores with the app and pytest (see test_jobs_api.py)
    yield workspace
    os.environ.pop("OMP_NUM_THREADS") if previous is None else os.environ.update(OMP_NUM_THREADS=previous)
    service = job_service(workspace, start=False)
    for job in service.queue.list_jobs(status="running"):
        if job.pid and process_alive(job.pid, job.proc_start):
            os.killpg(job.pid, signal.SIGKILL)
    stop_job_service(workspace)


@pytest.fixture(scope="module")
def client(ws: Workspace, tmp_path_factory: pytest.TempPathFactory):
    from gradio_client import Client

    demo = runs_app(ws)
    c = Client(serve(demo, ws), verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield c
    c.close()
    demo.close()


def form(user: str = "id1", steps: int = 2, method: str = "source_only") -> tuple:
    """The launch form's values: preset, user, method, context, K, steps, lr, batch, seed, device, init-from."""
    return ("tiny", user, method, "default", 4, steps, 0.01, 4, 1, "cpu", "")


def launch(client, **changes) -> tuple[str, str]:
    run_id, message = client.predict(*form(**changes), api_name="/launch_run")
    assert isinstance(run_id, str) and run_id in message, message
    return run_id, message


def header(client, run_id: str) -> str:
    return client.predict(run_id, api_name="/run_view")[HEADER]


def history(client) -> dict[str, dict]:
    table = client.predict("", "all", "all", "all", api_name="/run_history")
    return {row[-1]: dict(zip(table["headers"], row)) for row in table["data"]}


def test_the_runs_tab_names_every_data_event(client, ws: Workspace) -> None:
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == RUN_ENDPOINTS
    from pss_app.app import build_app

    app = build_app(ws)  # the whole app has the Runs tab's endpoints too
    assert RUN_ENDPOINTS <= {f"/{fn.api_name}" for fn in app.fns.values() if fn.api_name}


def test_bad_settings_are_explained_and_start_nothing(client, ws: Workspace) -> None:
    before = len(history(client))
    _, message = client.predict(*form(steps=0), api_name="/launch_run")
    assert message == "⚠ steps must be a whole number from 1 to 1000000 (got 0: it is a count)"
    _, message = client.predict("tiny", "id1", "source_only", "default", 4, 2, 0.01, 4, 1, "cuda:7", "",
                                api_name="/launch_run")
    assert message == "⚠ device 'cuda:7' is not available here; choose one of auto, cpu"
    assert len(history(client)) == before


def test_a_launched_run_completes_with_metrics_is_listed_and_deleted(client, ws: Workspace) -> None:
    run_id, message = launch(client)
    assert message.startswith(f"run `{run_id}` running on `cpu`")
    seen: list[str] = []

    def polled_done() -> bool:  # the timer's endpoint: skips outputs that did not change since the last tick
        out = client.predict(run_id, "", "all", "all", "all", api_name="/runs_poll")
        if isinstance(out[HEADER], str):
            seen.append(out[HEADER])
        return "**done**" in (seen[-1] if seen else "")

    wait_for(polled_done)
    assert any("**running" in text for text in seen) or len(seen) >= 1
    view = client.predict(run_id, api_name="/run_view")
    record = job_service(ws).store.open_run(run_id).record
    assert "step **2 / 2** (100 %)" in view[HEADER] and "source_main" in str(view[LOSSES])
    assert f"**FIoU {round(100 * record.fiou, 2)} %**" in view[METRICS]
    row = history(client)[run_id]
    assert (row["status"], row["user"], row["method"], row["steps"], row["device"]) == (
        "done", "id1", "source_only", "2/2", "cpu")
    assert row["FIoU"] == round(100 * record.fiou, 2) and row["MIoU"] == round(100 * record.miou, 2)

    cleared, message = client.predict(run_id, api_name="/delete_run")  # (the confirm row is layout)
    assert cleared == "" and message == f"deleted run `{run_id}`"
    assert run_id not in history(client) and not (ws.runs / run_id).exists()
    assert job_service(ws).store.index.get_run(run_id) is None


def test_cancel_from_the_app_stops_the_process_and_keeps_a_checkpoint(client, ws: Workspace) -> None:
    run_id, _ = launch(client, steps=300)  # the tiny preset logs every step
    run = job_service(ws).store.open_run(run_id)
    wait_for(lambda: run.events("train"))
    assert client.predict(run_id, api_name="/cancel_run") == "cancel requested: job running"
    wait_for(lambda: job_service(ws).queue.latest_job(run_id).status == "cancelled", deadline_s=30)
    job = job_service(ws).queue.latest_job(run_id)
    assert not process_alive(job.pid, job.proc_start) and "**cancelled**" in header(client, run_id)
    assert run.latest_checkpoint() is not None
    state = client.predict(run_id, api_name="/run_view")[STATE]
    assert (state["status"], state["can_resume"], state["can_cancel"], state["can_delete"]) == (
        "cancelled", True, False, True)


def test_kill_9_fails_the_job_while_the_app_serves_and_the_next_job_runs(client, ws: Workspace) -> None:
    first, _ = launch(client, steps=300)
    second, message = launch(client, user="id2")
    assert message.startswith(f"run `{second}` queued on `cpu`")  # one job per device: it waits
    assert "**queued · waiting for cpu: 1 running, 0 ahead**" in header(client, second)
    run = job_service(ws).store.open_run(first)
    wait_for(lambda: run.events("train"))
    job = job_service(ws).queue.latest_job(first)
    os.killpg(job.pid, signal.SIGKILL)
    wait_for(lambda: "**failed**" in header(client, first), deadline_s=30)
    assert "killed by SIGKILL" in header(client, first)
    wait_for(lambda: "**done**" in header(client, second))
    rows = history(client)
    assert (rows[first]["status"], rows[second]["status"]) == ("failed", "done")


def test_a_new_app_over_the_same_workspace_lists_every_run(client, ws: Workspace) -> None:
    from gradio_client import Client

    expected = {r.run_id for r in job_service(ws).store.list_runs()}
    assert len(expected) >= 3
    demo = runs_app(ws)
    try:
        again = Client(serve(demo, ws), verbose=False)
        assert set(history(again)) == expected
        again.close()
    finally:
        demo.close()
