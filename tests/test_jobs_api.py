"""The job facade (``pss.api.jobs``): validation before anything starts, queueing, cancel/resume, app restarts.

Real ``pss train`` processes on a tiny demo workspace (16 source images, 2 users x 12) with the ``tiny``
preset and ``source_only`` (no grouping), so each job takes seconds. Deadlines only stop a broken test
from hanging; nothing asserts on how long anything took.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pss.api.devices import pick_device
from pss.api.jobs import JobService, job_service, stop_job_service, train_command
from pss.api.launch_form import LaunchRequest, validate_launch
from pss.api.progress import latest_series
from pss.data.demo import DemoConfig, generate_demo
from pss.data.pss_layout import read_user
from pss.errors import ConfigError, RunStoreError
from pss.runs import JobQueue, RunStore
from pss.runs.procs import process_alive
from pss.workspace import Workspace
from support import wait_for as support_wait_for

TINY = DemoConfig(num_source=16, num_users=2, images_per_user=12)


wait_for = functools.partial(support_wait_for, poll_s=0.05)  # job states here change within tens of ms


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("jobs") / "ws"
    generate_demo(root / "data", seed=0, config=TINY)
    # Two cores shared by pytest, the app threads and the job: torch's OpenMP threads spin-wait when
    # oversubscribed (a tiny step measured 6x slower), so the jobs these tests start use one thread.
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield Workspace(root)
    if previous is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous
    for job in JobQueue(RunStore(root / "runs")).list_jobs(status="running"):  # never leave a job behind
        if job.pid and process_alive(job.pid, job.proc_start):
            os.killpg(job.pid, signal.SIGKILL)


@pytest.fixture
def service(ws: Workspace) -> Iterator[JobService]:
    svc = JobService(ws, poll_s=0.1, grace_s=5.0).start()
    yield svc
    svc.stop()


def request(**changes) -> LaunchRequest:
    values = dict(user="id1", method="source_only", preset="tiny", steps=2, device="cpu")
    return LaunchRequest(**{**values, **changes})


# ---------------------------------------------------------------- validation (nothing starts)

def test_request_overrides_are_the_dotted_form_of_the_fields() -> None:
    req = LaunchRequest(user="id2", method="pss", context="global", k=8.0, steps=300.0, lr=0.01, batch_size=8.0,
                        seed=3.0, init_from="r1", extra=("train.log_every=1",))
    assert req.overrides() == ["method.name=pss", "data.user=id2", "model.context.mode=global", "grouping.k=8",
                               "train.steps=300", "train.batch_size=8", "train.seed=3", "train.lr=0.01",
                               "train.init_from=r1", "train.log_every=1"]
    assert LaunchRequest(user="id1").overrides() == ["method.name=pss", "data.user=id1"]  # preset values kept


@pytest.mark.parametrize("changes, message", [
    (dict(steps=0), "steps must be a whole number from 1 to 1000000 (got 0"),
    (dict(steps=2.5), "steps must be a whole number from 1 to 1000000 (got 2.5"),
    (dict(steps=2 ** 70), "steps must be a whole number from 1 to 1000000 (got 1180591620717411303424"),
    (dict(batch_size=1), "batch size must be a whole number from 2 to 1024 (got 1: batch norm needs two images"),
    (dict(batch_size=5000), "batch size must be a whole number from 2 to 1024 (got 5000"),
    (dict(seed=2 ** 70), "seed must be a whole number from 0 to 4294967295 (got 1180591620717411303424: numpy"),
    (dict(seed=-1), "seed must be a whole number from 0 to 4294967295"),
    (dict(k=10 ** 6), "k must be a whole number from 1 to 10000"),
    (dict(k="many"), "k must be a number, got 'many'"),
    (dict(lr=0.0), "learning rate must be > 0"),
    (dict(lr="abc"), "lr must be a number, got 'abc'"),
    (dict(lr=float("inf")), "lr must be a finite number"),
    (dict(device=37), "device must be a name such as auto, cpu"),
    (dict(context="local"), "context mode 'local' is not one of none, global, group"),
    (dict(user="id7"), "unknown user 'id7'; users of this workspace: id1, id2"),
    (dict(user="../id1"), "unknown user '../id1'"),
    (dict(method="nomethod"), "unknown method 'nomethod'"),
    (dict(device="cuda:3"), "device 'cuda:3' is not available here"),
    (dict(init_from="no-such-run"), "init-from: no run 'no-such-run'"),
    (dict(init_from="/nowhere/model.pt"), "init-from checkpoint /nowhere/model.pt is not a checkpoint file under"),
    (dict(init_from="/etc/hostname"), "init-from checkpoint /etc/hostname is not a checkpoint file under"),
    (dict(preset="nopreset"), "config preset 'nopreset' not found"),
    (dict(extra=("train.stepz=3",)), "unknown config key 'train.stepz' (did you mean 'steps'?)"),
])
def test_invalid_settings_are_refused_before_anything_starts(ws: Workspace, changes: dict, message: str) -> None:
    svc = JobService(ws)  # not started: no worker needed to refuse a launch
    runs_before, jobs_before = sorted(os.listdir(ws.runs)), len(svc.queue.list_jobs())
    with pytest.raises(ConfigError, match=re.escape(message)):
        svc.launch(request(**changes))
    assert sorted(os.listdir(ws.runs)) == runs_before and len(svc.queue.list_jobs()) == jobs_before


def test_validation_resolves_the_method_context_and_checks_init_from(ws: Workspace, tmp_path: Path) -> None:
    assert validate_launch(ws, request(method="pss")).model.context.mode == "group"  # the method's default
    config = validate_launch(ws, request())
    assert config.model.context.mode == "none" and config.data.root == str(ws.data)
    assert config.train.steps == 2 and config.method_name == "source_only"

    from pss.config import config_to_dict

    store = RunStore(tmp_path / "other-runs")  # a separate store: these runs never get jobs
    start = store.create_run("id1", "source_only", config_to_dict(config), "cpu", 2)
    with pytest.raises(ConfigError, match="has no checkpoint yet"):
        validate_launch(ws, request(init_from=start.run_id), store)
    start.checkpoint_path(2).write_bytes(b"weights")
    assert validate_launch(ws, request(init_from=start.run_id), store).train.init_from == start.run_id
    inside = ws.runs / "r" / "checkpoints" / "step_00000002.pt"  # a checkpoint file our runs wrote: accepted
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"weights")
    assert validate_launch(ws, request(init_from=str(inside))).train.init_from == str(inside)
    shutil.rmtree(ws.runs / "r")
    # a context model may start from a context-free run (its context layers start fresh, as in `pss experiment`)
    assert validate_launch(ws, request(init_from=start.run_id, context="group"), store).model.context.mode == "group"
    with pytest.raises(ConfigError, match=r"other model settings \(output_stride: \[8\] there, \[16\] here\)"):
        validate_launch(ws, request(init_from=start.run_id, extra=("model.output_stride=16",)), store)


def test_devices_auto_picks_the_least_busy_gpu_else_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pss.api.devices as devices

    store = RunStore(tmp_path / "runs")
    queue = JobQueue(store)
    monkeypatch.setattr(devices, "visible_gpus", lambda: ())
    assert pick_device("auto", queue) == "cpu" and pick_device("CPU", queue) == "cpu"
    monkeypatch.setattr(devices, "visible_gpus", lambda: ("cuda:0", "cuda:1"))
    assert pick_device("auto", queue) == "cuda:0"  # a tie goes to the first GPU
    queue.enqueue(store.create_run("id1", "pss", {}, "cuda:0", 1).run_id, ["true"], "cuda:0")
    assert pick_device("auto", queue) == "cuda:1"
    assert pick_device("cuda", queue) == "cuda:0" and devices.device_choices() == ["auto", "cpu", "cuda:0", "cuda:1"]
    with pytest.raises(ConfigError, match="choose one of auto, cpu, cuda:0, cuda:1"):
        pick_device("cuda:2", queue)


def test_the_job_command_trains_the_saved_config(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    config = tmp_path / "runs" / "r1" / "config.yaml"
    assert train_command(ws, "r1", "cuda:0", config) == [
        sys.executable, "-m", "pss.cli", "train", "-w", str(ws.root), "--device", "cuda:0", "--run-id", "r1",
        "-c", str(config)]
    assert train_command(ws, "r1", "cpu", resume=True)[-4:] == ["--device", "cpu", "--resume", "r1"]


def test_one_service_per_workspace_and_process(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    first = job_service(ws)
    try:
        assert job_service(Workspace(tmp_path / "sub" / "..")) is first and first.worker is not None
        assert first.worker.is_alive() and first.worker.devices[0] == "cpu"
    finally:
        stop_job_service(ws)
    assert first.worker is None and job_service(ws, start=False) is not first
    stop_job_service(ws)


# ---------------------------------------------------------------- real jobs

def test_two_launches_at_once_queue_and_both_finish_with_metrics(service: JobService, ws: Workspace) -> None:
    barrier, launched = threading.Barrier(2), {}

    def launch(user: str) -> None:
        barrier.wait()
        launched[user] = service.launch(request(user=user))

    threads = [threading.Thread(target=launch, args=(user,)) for user in ("id1", "id2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = {user: service.queue.get(item.job_id) for user, item in launched.items()}
    assert sorted(job.status for job in jobs.values()) == ["queued", "running"]  # one cpu job at a time
    assert {job.device for job in jobs.values()} == {"cpu"}

    running_at_once = 0

    def both_done() -> bool:
        nonlocal running_at_once
        statuses = [service.queue.get(item.job_id).status for item in launched.values()]
        running_at_once = max(running_at_once, statuses.count("running"))
        return statuses == ["done", "done"]

    wait_for(both_done)
    assert running_at_once == 1
    for user, item in launched.items():
        run = service.store.open_run(item.run_id)
        record, report, evals = run.record, run.read_report(), run.events("eval")
        assert record.status == "done" and record.user == user and record.steps == 2
        assert record.fiou is not None and record.miou is not None
        assert len(evals) == 1 and evals[0]["fiou"] == pytest.approx(record.fiou)
        labelled = sum(r.mask_path is not None for r in read_user(ws.personal, user).records)
        assert report["num_images"] == labelled and len(report["per_class_iou"]["pss"]) == 21


def test_cancel_keeps_a_checkpoint_and_resume_finishes_the_run(service: JobService) -> None:
    launched = service.launch(request(steps=60, extra=("train.log_every=1",)))
    run = service.store.open_run(launched.run_id)
    wait_for(lambda: run.events("train"))
    assert service.cancel(launched.run_id) == "running"  # SIGTERM sent; the engine stops after this step
    wait_for(lambda: service.queue.get(launched.job_id).status == "cancelled", deadline_s=30)
    job = service.queue.get(launched.job_id)
    assert job.resumable and not process_alive(job.pid, job.proc_start)
    last = run.events("train")[-1]["step"]
    assert run.meta["status"] == "cancelled" and 1 <= last < 60
    assert run.latest_checkpoint() == run.checkpoint_path(last)
    assert run.events("end")[-1]["status"] == "cancelled"
    assert service.can_resume(launched.run_id)

    resumed = service.resume(launched.run_id)
    assert resumed.run_id == launched.run_id and resumed.job_id != launched.job_id
    assert not service.can_resume(launched.run_id)  # a job is queued or running now
    wait_for(lambda: service.queue.get(resumed.job_id).status in ("done", "failed"))
    assert service.queue.get(resumed.job_id).status == "done" and run.meta["status"] == "done"
    assert [e["step"] for e in latest_series(run.events(), "train")] == list(range(1, 61))
    with pytest.raises(RunStoreError, match="only failed or cancelled runs can be resumed"):
        service.resume(launched.run_id)


def test_a_new_service_adopts_a_running_job_and_can_cancel_it(ws: Workspace) -> None:
    first = JobService(ws, poll_s=0.1, grace_s=5.0).start()
    launched = first.launch(request(steps=200, extra=("train.log_every=1",)))
    run = first.store.open_run(launched.run_id)
    wait_for(lambda: run.events("train"))
    first.stop()  # the app goes away; the job keeps running in its own session
    job = first.queue.get(launched.job_id)
    assert job.status == "running" and process_alive(job.pid, job.proc_start)

    second = JobService(ws, poll_s=0.1, grace_s=5.0).start()  # a restarted app over the same workspace
    try:
        assert second.queue.get(launched.job_id).status == "running"  # reaping left the live job alone
        assert launched.run_id in {r.run_id for r in second.store.list_runs()}
        assert second.cancel(launched.run_id) == "running"
        wait_for(lambda: second.queue.get(launched.job_id).status == "cancelled", deadline_s=30)
        assert run.meta["status"] == "cancelled" and run.latest_checkpoint() is not None
    finally:
        second.stop()


def test_on_start_a_job_whose_process_is_gone_is_failed_and_resumable(tmp_path: Path) -> None:
    import subprocess

    ws = Workspace(tmp_path)
    store = RunStore(ws.runs)
    run = store.create_run("id1", "source_only", {"train": {"steps": 10}}, "cpu", 10)
    queue = JobQueue(store)
    job_id = queue.enqueue(run.run_id, ["true"], "cpu")
    assert queue.next_runnable(devices=["cpu"]).job_id == job_id
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the app died and its job with it
    queue.mark_running(job_id, gone.pid)
    run.checkpoint_path(4).write_bytes(b"weights")

    service = JobService(ws, poll_s=0.1).start()  # the app starts again
    try:
        job = service.queue.get(job_id)
        assert (job.status, job.resumable) == ("failed", True) and "is gone" in job.error
        assert run.meta["status"] == "failed" and service.can_resume(run.run_id)
    finally:
        service.stop()


def test_cancel_while_the_job_is_still_starting_ends_it(service: JobService) -> None:
    launched = service.launch(request(steps=60))
    wait_for(lambda: service.queue.get(launched.job_id).pid is not None)
    assert service.cancel(launched.run_id) == "running"  # SIGTERM now; SIGKILL if no step was made by then
    run = service.store.open_run(launched.run_id)
    # the job row ends first, then the run's status follows
    wait_for(lambda: run.meta["status"] == "cancelled", deadline_s=30)
    job = service.queue.get(launched.job_id)
    assert job.status == "cancelled" and not process_alive(job.pid, job.proc_start)
