"""The job service on a Ray cluster (``pss.runs.ray_jobs``, issue 19 item 2): a launched run handed to Ray.

Through the job service api on a local Ray (2 CPUs, started once for the module): a tiny run on Ray ends ``done``
with the same report keys as a local run; a cancelled running Ray job ends ``cancelled`` and a resume continues from
its checkpoint; a job whose Ray worker process is killed (kill -9) ends ``failed`` with a message; a job left
running by an app that died is ended by the next app; without Ray the option is disabled, saying what to install.
Deadlines only stop a broken test from hanging; nothing asserts on how long anything took.
"""
from __future__ import annotations

import functools
import os
import re
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pss.api.jobs import JobService
from pss.api.launch_form import LaunchRequest
from pss.data.demo import DemoConfig, generate_demo
from pss.errors import ConfigError
from pss.runs import JobQueue, RunStore
from pss.runs.procs import process_alive
from pss.runs.ray_jobs import RaySettings
from pss.workspace import Workspace
from support import wait_for as support_wait_for

TINY = DemoConfig(num_source=16, num_users=2, images_per_user=12)
wait_for = functools.partial(support_wait_for, poll_s=0.1, deadline_s=300)


def request(**changes: Any) -> LaunchRequest:
    values: dict[str, Any] = dict(user="id1", method="source_only", preset="tiny", steps=2, device="cpu",
                                  run_on="ray")
    return LaunchRequest(**{**values, **changes})


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # one local Ray for the module (its start is the expensive part); the job service uses it as it finds it
    # started with Python's default SIGINT handler: Ray's processes would inherit a SIG_IGN an earlier test left
    # behind, and Ray cancels a task by SIGINT in its worker
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("ray-jobs") / "ws"
    generate_demo(root / "data", seed=0, config=TINY)
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the local job of the first test: one thread on the shared cores
    yield Workspace(root)
    if previous is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous
    for job in JobQueue(RunStore(root / "runs")).list_jobs(status="running"):  # never leave a local job behind
        if job.pid and not job.on_ray and process_alive(job.pid, job.proc_start):
            os.killpg(job.pid, signal.SIGKILL)


@pytest.fixture
def service(ray_cluster: Any, ws: Workspace) -> Iterator[JobService]:
    svc = JobService(ws, poll_s=0.1, grace_s=10.0, warm=False, ray=RaySettings()).start()
    yield svc
    svc.stop()


def _ended(svc: JobService, job_id: str) -> bool:
    return svc.queue.get(job_id).status in ("done", "failed", "cancelled")


def _train_steps(svc: JobService, run_id: str) -> list[int]:
    return [e["step"] for e in svc.store.open_run(run_id).events("train")]


def _ray_worker_pid(svc: JobService, run_id: str) -> int | None:
    """The pid of the Ray worker process running the job (the task logs it when it starts)."""
    found = re.findall(r"running as a Ray task on \S+, process (\d+)", "\n".join(svc.store.open_run(run_id)
                                                                                .tail_log(200)))
    return int(found[-1]) if found else None


def test_a_run_on_ray_finishes_done_with_the_report_of_a_local_run(service: JobService) -> None:
    local = service.launch(request(run_on="local"))
    on_ray = service.launch(request())
    assert local.device == "cpu" and on_ray.device == "ray:cpu"
    wait_for(lambda: _ended(service, local.job_id) and _ended(service, on_ray.job_id))
    job = service.queue.get(on_ray.job_id)
    assert job.status == "done", (job.error, service.store.open_run(on_ray.run_id).tail_log(30))
    assert service.queue.get(local.job_id).status == "done"
    run = service.store.open_run(on_ray.run_id)
    assert run.meta["status"] == "done" and run.record.status == "done" and run.record.fiou is not None
    ray_report, local_report = run.read_report(), service.store.open_run(local.run_id).read_report()
    assert ray_report is not None and local_report is not None
    assert sorted(ray_report) == sorted(local_report)
    assert _train_steps(service, on_ray.run_id) == [1, 2]  # progress in the run store, as for a local job
    assert _ray_worker_pid(service, on_ray.run_id) not in (None, os.getpid())  # ran in a Ray worker process
    assert "--device cpu" in " ".join(job.command)  # the command says what the task ran, in `pss train` terms


def test_cancel_of_a_running_ray_job_ends_cancelled_and_a_resume_continues(service: JobService) -> None:
    launched = service.launch(request(steps=300, extra=("train.checkpoint_every=5",)))
    run = service.store.open_run(launched.run_id)
    wait_for(lambda: run.latest_checkpoint() is not None or _ended(service, launched.job_id))
    assert service.queue.get(launched.job_id).status == "running", service.queue.get(launched.job_id).error
    assert service.cancel(launched.run_id) == "running"  # it stops after its current step
    wait_for(lambda: _ended(service, launched.job_id))
    job = service.queue.get(launched.job_id)
    assert job.status == "cancelled" and job.error == "cancelled by the user" and job.resumable
    assert run.meta["status"] == "cancelled"
    checkpoint = run.latest_checkpoint()
    assert checkpoint is not None
    # the engine stopped between steps and checkpointed where it stopped (the SIGTERM semantics of a local job)
    stopped_at = int(checkpoint.stem.split("_")[1])
    assert stopped_at == max(_train_steps(service, launched.run_id)) < 300

    resumed = service.resume(launched.run_id)
    assert resumed.device == "ray:cpu"  # where it ran before
    wait_for(lambda: _ended(service, resumed.job_id))
    assert service.queue.get(resumed.job_id).status == "done", service.queue.get(resumed.job_id).error
    steps = _train_steps(service, launched.run_id)
    assert steps[-1] == 300 and steps[steps.index(stopped_at) + 1] == stopped_at + 1  # continued, not restarted
    assert run.meta["status"] == "done"


def test_a_ray_job_whose_worker_is_killed_fails_with_a_message(service: JobService) -> None:
    launched = service.launch(request(steps=300))
    wait_for(lambda: _ray_worker_pid(service, launched.run_id) is not None and
             _train_steps(service, launched.run_id) or _ended(service, launched.job_id))
    pid = _ray_worker_pid(service, launched.run_id)
    assert pid is not None and not _ended(service, launched.job_id)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _ended(service, launched.job_id))
    job = service.queue.get(launched.job_id)
    assert job.status == "failed"
    assert job.error is not None and job.error.startswith("its Ray task died before the run finished ("), job.error
    run = service.store.open_run(launched.run_id)
    assert run.meta["status"] == "failed" and run.meta["error"] == job.error  # the run says why, too


def test_a_service_started_again_in_the_same_app_adopts_its_running_ray_job(ray_cluster: Any, ws: Workspace) -> None:
    first = JobService(ws, poll_s=0.1, warm=False, ray=RaySettings()).start()
    launched = first.launch(request(steps=100))
    wait_for(lambda: bool(_train_steps(first, launched.run_id)) or _ended(first, launched.job_id))
    first.stop()  # the app's tests stop and start the workspace's service; the task runs on meanwhile
    second = JobService(ws, poll_s=0.1, warm=False, ray=RaySettings()).start()
    try:
        assert second.ray_worker is not None  # started for the Ray job it found running
        wait_for(lambda: _ended(second, launched.job_id))
        assert second.queue.get(launched.job_id).status == "done", second.queue.get(launched.job_id).error
        assert _train_steps(second, launched.run_id)[-1] == 100
    finally:
        second.stop()


def test_a_ray_job_of_an_app_that_died_is_ended_by_the_next_app(ws: Workspace) -> None:
    """No Ray needed: the job's owner (the app that submitted the task) is a process that has exited."""
    import subprocess

    store = RunStore(ws.runs)
    run = store.create_run("id1", "source_only", {}, "ray:cpu", 2)
    queue = JobQueue(store)
    job_id = queue.enqueue(run.run_id, [sys.executable, "-m", "pss.cli", "train"], "ray:cpu")
    assert queue.next_runnable(devices=["ray:cpu"], exclusive=False) is not None
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    queue.mark_running(job_id, owner.pid)  # the start time of the live process is recorded
    owner.wait()
    JobService(ws, warm=False).queue.reap()  # what a starting service does first
    job = queue.get(job_id)
    assert job.status == "failed" and job.error is not None
    assert job.error.startswith(f"the app that ran it on Ray (process {owner.pid}) stopped before the run finished")
    assert store.open_run(run.run_id).meta["status"] == "failed"


def test_ray_jobs_are_not_one_per_device_and_their_cancel_signals_no_process(ws: Workspace) -> None:
    store = RunStore(ws.runs)
    queue = JobQueue(store)
    runs = [store.create_run("id1", "source_only", {}, "ray:cpu", 2) for _ in range(2)]
    jobs = [queue.enqueue(r.run_id, [sys.executable, "-m", "pss.cli", "train"], "ray:cpu") for r in runs]
    claimed = [queue.next_runnable(devices=["ray:cpu"], exclusive=False) for _ in jobs]
    assert [j.job_id for j in claimed if j] == jobs  # both run at once: the cluster schedules them
    assert queue.next_runnable(devices=["ray:cpu"]) is None  # nothing left queued
    for job_id in jobs:
        queue.mark_running(job_id, os.getpid())  # this test process "owns" them
        assert queue.cancel(job_id) == "running"  # flagged only: this process got no SIGTERM (pytest is alive)
        assert queue.get(job_id).cancel_requested is not None
        queue.mark_ended(job_id, "cancelled", "cancelled by the user")


def test_without_ray_the_option_is_disabled_and_says_what_to_install(ws: Workspace,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")  # imported before the patch, so that its undo puts the module back, not removes it
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    svc = JobService(ws, warm=False)
    option = svc.ray_option()
    assert not option.available and 'pip install -e ".[cluster]"' in option.message
    runs_before = sorted(os.listdir(ws.runs))
    with pytest.raises(ConfigError, match=re.escape('pip install -e ".[cluster]"')):
        svc.launch(request())
    assert sorted(os.listdir(ws.runs)) == runs_before  # nothing was created
    monkeypatch.undo()
    assert JobService(ws, warm=False).ray_option().available  # with Ray: offered, saying where jobs go


def test_the_ray_address_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSS_RAY_ADDRESS", "head:6379")
    assert RaySettings.from_env().address == "head:6379"
    monkeypatch.setenv("PSS_RAY_ADDRESS", "local")
    assert RaySettings.from_env().address is None
    monkeypatch.delenv("PSS_RAY_ADDRESS")
    assert RaySettings.from_env() == RaySettings()


def test_a_form_device_maps_to_a_ray_device() -> None:
    from pss.runs.ray_jobs import ray_device

    assert [ray_device(d) for d in ("auto", "cpu", "CUDA", "cuda:1")] == ["ray:auto", "ray:cpu", "ray:cuda",
                                                                         "ray:cuda"]
    with pytest.raises(ConfigError, match="choose auto, cpu or cuda"):
        ray_device("tpu")
