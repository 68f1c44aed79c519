"""Service functions of the Runs tab, called directly: progress maths, curves, the live view, the history table.

Runs here are written straight into the run store (no job process), with hand-written events.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pss.api import Workspace
from pss.api.jobs import stop_job_service
from pss.errors import ConfigError
from pss_app.services import runs as svc


def train_event(step: int, time: float, seconds: float, **losses: float) -> dict:
    return {"step": step, "time": time, "kind": "train", "lr": 0.01, "seconds": seconds, **losses}


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    for user in ("id1", "id2"):
        (tmp_path / "data" / "personal" / user / "JPEGImages").mkdir(parents=True)
    workspace = Workspace(tmp_path)
    yield workspace
    stop_job_service(workspace)


def fake_run(ws: Workspace, user: str = "id1", method: str = "pss", steps: int = 10, context: str = "group"):
    config = {"method": {"name": method}, "model": {"context": {"mode": context}}, "grouping": {"k": 8},
              "train": {"steps": steps, "lr": 0.01, "batch_size": 4, "seed": 3}}
    return svc.service(ws).store.create_run(user, method, config, "cpu", steps)


# ---------------------------------------------------------------- progress maths

def test_latest_series_keeps_the_later_events_of_a_resumed_run() -> None:
    events = [train_event(1, 10, 1), train_event(2, 11, 2), {"step": 2, "kind": "checkpoint", "time": 11},
              train_event(3, 12, 3), train_event(3, 50, 1), train_event(4, 51, 2)]  # resumed at step 2's checkpoint
    series = svc.latest_series(events, "train")
    assert [(e["step"], e["time"]) for e in series] == [(1, 10), (2, 11), (3, 50), (4, 51)]
    assert svc.latest_series(events, "eval") == []


def test_throughput_and_eta_from_the_recent_events() -> None:
    train = [train_event(10, 100.0, 2.0), train_event(20, 102.0, 4.0), train_event(30, 104.0, 6.0)]
    progress = svc.measure_progress(train, total=100, batch_size=8, running=True)
    # (30 - 10) steps in (104 - 100) s = 5 steps/s = 40 images/s; (100 - 30) / 5 = 14 s left
    assert (progress.step, progress.steps_per_s, progress.images_per_s) == (30, 5.0, 40.0)
    assert progress.eta_s == pytest.approx(14.0) and progress.fraction == pytest.approx(0.3)
    assert svc.measure_progress(train, 100, 8, running=False).eta_s is None  # no ETA unless running
    first = svc.measure_progress([train_event(4, 100.0, 2.0)], 100, 8, running=True)
    assert first.steps_per_s == 2.0 and first.eta_s == pytest.approx(48.0)  # 4 steps in the loop's first 2 s
    assert svc.measure_progress([], 100, 8, running=True) == svc.Progress(0, 100, None, None, None)


def test_throughput_after_a_resume_ignores_the_time_the_run_was_down() -> None:
    train = [train_event(1, 100.0, 1.0), train_event(2, 101.0, 2.0),
             train_event(3, 900.0, 1.0), train_event(5, 901.0, 2.0)]  # resumed 800 s later; clock restarted
    assert svc.measure_progress(train, 10, 1, running=True).steps_per_s == 2.0  # (5 - 3) / (901 - 900)


@pytest.mark.parametrize("seconds, text", [(None, "–"), (0.4, "0 s"), (59.6, "1 min 00 s"), (187, "3 min 07 s"),
                                           (3720, "1 h 02 min")])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert svc.format_duration(seconds) == text


# ---------------------------------------------------------------- figures

def test_loss_and_eval_curves_come_from_the_events() -> None:
    train = [train_event(1, 10, 1, source_main=3.0, source_aux=1.2), train_event(2, 11, 2, source_main=2.5,
                                                                                 source_aux=1.1)]
    figure = svc.loss_figure(train)
    assert [(t.name, list(t.x), list(t.y)) for t in figure.data] == [
        ("source_main", [1, 2], [3.0, 2.5]), ("source_aux", [1, 2], [1.2, 1.1])]
    evals = [{"step": 2, "kind": "eval", "fiou": 0.5, "miou": 0.25}]
    figure = svc.eval_figure(evals)
    assert [(t.name, list(t.y)) for t in figure.data] == [("FIoU", [50.0]), ("MIoU", [25.0])]
    source = [{"step": 1, "kind": "source_val", "fiou": 0.4, "miou": 0.5}, {"step": 2, "kind": "source_val",
                                                                          "fiou": 0.6, "miou": 0.7}]
    figure = svc.eval_figure(evals, 2, source)  # the source val curve, dashed, next to the user's evaluation
    assert [(t.name, list(t.y)) for t in figure.data][2:] == [("source val FIoU", [40.0, 60.0]),
                                                              ("source val MIoU", [50.0, 70.0])]
    assert figure.data[2].line.dash == "dash" and len(svc.eval_figure([], 2, source).data) == 2
    assert svc.loss_figure([]).data == () and "waiting" in svc.loss_figure([]).layout.annotations[0].text
    report = {"class_names": ["background", "cat"], "per_class_iou": {"pss": [0.9, None]}}
    assert list(svc.class_iou_figure(report).data[0].y) == [90.0, None]


# ---------------------------------------------------------------- one run, history

def test_run_view_shows_progress_losses_log_and_buttons(ws: Workspace) -> None:
    run = fake_run(ws)
    view = svc.run_view(ws, run.run_id)
    assert view.status == "queued" and "step **0 / 10**" in view.header and view.losses.data == ()
    assert not view.can_cancel and not view.can_resume
    run.set_status("running")
    run.log_event("train", 1, lr=0.01, seconds=1.0, loss_seg=2.0)
    run.log("line one\rline one, updated")  # tqdm's carriage returns: the last state of each line is shown
    view = svc.run_view(ws, run.run_id)
    assert "**running**" in view.header and "step **1 / 10** (10 %)" in view.header
    assert "1.00 steps/s (4.0 img/s)" in view.header and "ETA 9 s" in view.header
    assert [t.name for t in view.losses.data] == ["loss_seg"] and view.log.endswith("line one, updated")
    assert "name: pss" in view.config_yaml
    run.set_status("failed", error="RuntimeError: boom")
    assert "⚠ RuntimeError: boom" in svc.run_view(ws, run.run_id).header
    assert not svc.run_view(ws, run.run_id).can_resume  # no checkpoint yet
    run.checkpoint_path(1).write_bytes(b"weights")
    assert svc.run_view(ws, run.run_id).can_resume


def test_signatures_change_when_the_run_or_the_history_does(ws: Workspace) -> None:
    run = fake_run(ws)
    view, history = svc.view_signature(ws, run.run_id), svc.history_signature(ws)
    assert svc.view_signature(ws, run.run_id) == view and svc.history_signature(ws) == history
    run.log_event("train", 1, lr=0.01, seconds=1.0, loss_seg=2.0)
    assert svc.view_signature(ws, run.run_id) != view and svc.history_signature(ws) != history
    history = svc.history_signature(ws)
    fake_run(ws, user="id2")
    assert svc.history_signature(ws) != history


def test_history_table_columns_filters_and_search(ws: Workspace) -> None:
    first = fake_run(ws, "id1", "pss")
    second = fake_run(ws, "id2", "source_only", context="none")
    second.set_status("running")
    second.set_status("done", fiou=0.61234, miou=0.4, duration_s=125.0)
    table = svc.history_table(ws)
    assert list(table.columns) == svc.HISTORY_COLUMNS and set(table["run"]) == {first.run_id, second.run_id}
    done = table[table["run"] == second.run_id].iloc[0]
    assert (done["user"], done["method"], done["status"], done["FIoU"], done["MIoU"], done["duration"]) == (
        "id2", "source_only", "done", 61.23, 40.0, "2 min 05 s")
    assert done["settings"] == "ctx=none K=8 steps=10 lr=0.01 bs=4 seed=3"
    assert list(svc.history_table(ws, status="done")["run"]) == [second.run_id]
    assert list(svc.history_table(ws, method="pss")["run"]) == [first.run_id]
    assert list(svc.history_table(ws, user="id2")["run"]) == [second.run_id]
    assert list(svc.history_table(ws, search="source_")["run"]) == [second.run_id]
    assert svc.history_table(ws, search="no such thing").empty
    assert [value for _, value in svc.init_choices(ws)] == ["", second.run_id]  # done runs only


def test_launch_from_form_refuses_bad_settings_with_the_reason(ws: Workspace) -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown user 'id5'; users of this workspace: id1, id2")):
        svc.launch_from_form(ws, "tiny", "id5", "source_only", "default", 4, 3, 0.01, 4, 1, "cpu", "")
    with pytest.raises(ConfigError, match="steps must be a whole number from 1 to 1000000"):
        svc.launch_from_form(ws, "tiny", "id1", "source_only", "default", 4, -2, 0.01, 4, 1, "cpu", "")
    assert svc.history_table(ws).empty


def test_form_choices_follow_the_registry_and_presets() -> None:
    assert svc.method_choices()[:1] == ["source_only"] and "pss" in svc.method_choices()
    assert svc.context_choices("pss") == [("method default (group)", "default"), ("none", "none"),
                                          ("global", "global"), ("group", "group")]
    assert svc.context_choices("source_only")[0] == ("method default (none)", "default")
    assert svc.form_defaults("tiny") == {"method": "pss", "k": 4, "steps": 3, "lr": 0.01, "batch_size": 4,
                                         "seed": 1234}
    html = svc.progress_html(svc.Progress(3, 12, None, None, None), "running")
    assert 'max="12" value="3"' in html and 'data-status="running"' in html


def test_compact_log_keeps_the_last_state_of_each_progress_bar() -> None:
    bar = "source_only id1: "
    lines = ["job x: starting", "", f"{bar}  0%|     | 0/3", f"{bar} 33%|█    | 1/3", "eval\rpredicting 2/4",
             f"{bar}100%|███| 3/3", f"{bar}100%|███| 3/3 done", "run r: done in 2 s"]
    assert svc.compact_log(lines) == ["job x: starting", f"{bar} 33%|█    | 1/3", "predicting 2/4",
                                      f"{bar}100%|███| 3/3 done", "run r: done in 2 s"]


def test_queue_position_of_a_waiting_job(tmp_path: Path) -> None:
    from pss.api.jobs import JobService

    jobs = JobService(Workspace(tmp_path))  # not started: nothing runs the (never started) jobs
    ids = [jobs.queue.enqueue(jobs.store.create_run("id1", "pss", {}, "cpu", 5).run_id, ["true"], "cpu")
           for _ in range(3)]
    other = jobs.queue.enqueue(jobs.store.create_run("id1", "pss", {}, "cuda:0", 5).run_id, ["true"], "cuda:0")
    assert jobs.queue.next_runnable(devices=["cpu"]).job_id == ids[0]  # claimed: running on cpu
    position = [svc.queue_position(jobs, jobs.queue.get(job_id)) for job_id in (*ids, other)]
    assert position == ["", "waiting for cpu: 1 running, 0 ahead", "waiting for cpu: 1 running, 1 ahead",
                        "waiting for cuda:0: 0 running, 0 ahead"]


def test_run_on_offers_this_machine_and_the_ray_cluster_or_says_what_to_install(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    if importlib.util.find_spec("ray") is not None:
        import ray  # noqa: F401  (imported before the patch, so that its undo puts the module back, not removes it)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError: Ray not installed
    without = svc.run_on_choices(ws)
    assert without.choices == [("this machine", "local"), ("Ray cluster (not installed)", "ray")]
    assert not without.ray_available and 'pip install -e ".[cluster]"' in without.info
    needs_ray = 'Running jobs on a Ray cluster needs Ray: pip install -e ".[cluster]"'
    with pytest.raises(ConfigError, match=re.escape(needs_ray)):
        svc.launch_from_form(ws, "tiny", "id1", "source_only", "default", 4, 3, 0.01, 4, 1, "cpu", "", "ray")
    with pytest.raises(ConfigError, match="run on 'moon': choose 'local' or 'ray'"):
        svc.launch_from_form(ws, "tiny", "id1", "source_only", "default", 4, 3, 0.01, 4, 1, "cpu", "", "moon")
    assert svc.history_table(ws).empty  # nothing was created
    monkeypatch.undo()  # Ray is back (where installed)
    pytest.importorskip("ray")
    monkeypatch.setenv("PSS_RAY_ADDRESS", "head:6379")
    stop_job_service(ws)  # the next service reads the address
    with_ray = svc.run_on_choices(ws)
    assert with_ray.ray_available and with_ray.choices[1] == ("Ray cluster (head:6379)", "ray")
    assert with_ray.info.startswith("Jobs run as tasks on the Ray cluster at head:6379; the workspace must be on")
