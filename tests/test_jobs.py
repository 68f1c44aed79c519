"""Job queue and worker: one job per device, cancel, kill -9 → failed, restart, concurrent claims.

Jobs are tiny ``sys.executable -c`` commands. Deadlines below only stop a broken test from
hanging; nothing asserts on how long anything took.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pss.errors import RunStoreError
from pss.runs import JobQueue, RunStore, Worker
from pss.runs.procs import process_alive, process_start_time

SLEEP_60 = [sys.executable, "-c", "import time; time.sleep(60)"]
QUICK = [sys.executable, "-c", "print('job says hi')"]


def wait_for(condition: Callable[[], bool], worker: Worker | None = None, deadline_s: float = 30.0) -> None:
    """Poll ``condition`` (stepping ``worker`` each time) until it holds; fail after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        if worker is not None:
            worker.run_once()
        if condition():
            return
        if time.monotonic() > end:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.05)


def wait_for_file_cmd(flag: Path) -> list[str]:
    """A job that runs until ``flag`` exists."""
    code = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\nprint('released')"
    return [sys.executable, "-c", code, str(flag)]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.fixture
def queue(store: RunStore) -> JobQueue:
    return JobQueue(store, grace_s=2.0)


def new_run(store: RunStore, user: str = "id1") -> str:
    return store.create_run(user, "pss", {"seed": 0}, "cpu", 10).run_id


def kill_leftovers(queue: JobQueue) -> None:
    for job in queue.list_jobs(status="running"):
        if job.pid is not None and process_alive(job.pid, job.proc_start):
            os.killpg(job.pid, signal.SIGKILL)


def test_second_job_on_a_device_waits_for_the_first(store: RunStore, queue: JobQueue, tmp_path: Path) -> None:
    flag = tmp_path / "release"
    first = queue.enqueue(new_run(store), wait_for_file_cmd(flag), "cpu")
    second_run = new_run(store, "id2")
    second = queue.enqueue(second_run, QUICK, "cpu")
    worker = Worker(store, ["cpu"], poll_s=0.05, queue=queue)
    try:
        assert worker.run_once() == [first]
        assert worker.run_once() == []  # the device is busy
        assert (queue.get(first).status, queue.get(second).status) == ("running", "queued")
        assert store.open_run(second_run).record.status == "queued"

        flag.touch()
        wait_for(lambda: queue.get(second).status == "done", worker)
        assert queue.get(first).status == "done"
        assert queue.get(first).ended <= queue.get(second).started
        assert "job says hi" in store.open_run(second_run).tail_log(5)  # stdout went to log.txt
        assert store.open_run(second_run).record.status == "done"
    finally:
        kill_leftovers(queue)


def test_cancel_a_running_job(store: RunStore, queue: JobQueue) -> None:
    run_id = new_run(store)
    job_id = queue.enqueue(run_id, SLEEP_60, "cpu")
    worker = Worker(store, ["cpu"], poll_s=0.05, queue=queue)
    try:
        worker.run_once()
        job = queue.get(job_id)
        assert job.status == "running" and process_alive(job.pid, job.proc_start)
        assert store.open_run(run_id).record.status == "running"

        assert queue.cancel(job_id) == "running"  # SIGTERM sent; ends when the process is gone
        wait_for(lambda: queue.get(job_id).status == "cancelled", worker, deadline_s=10.0)
        assert not process_alive(job.pid, job.proc_start)
        assert store.open_run(run_id).record.status == "cancelled"
        assert queue.cancel(job_id) == "cancelled"  # idempotent
    finally:
        kill_leftovers(queue)


def test_cancel_a_queued_job(store: RunStore, queue: JobQueue) -> None:
    run_id = new_run(store)
    job_id = queue.enqueue(run_id, QUICK, "cpu")
    assert queue.cancel(job_id) == "cancelled"
    assert store.open_run(run_id).record.status == "cancelled"
    assert queue.next_runnable() is None


def start_claimed(queue: JobQueue, command: list[str]) -> tuple[str, subprocess.Popen]:
    """Claim the next job and start ``command`` for it by hand (no worker watching it)."""
    job = queue.next_runnable()
    assert job is not None
    proc = subprocess.Popen(command, start_new_session=True)
    queue.mark_running(job.job_id, proc.pid)
    return job.job_id, proc


def test_kill_9_then_reap_marks_failed(store: RunStore, queue: JobQueue) -> None:
    plain, with_ckpt = new_run(store), new_run(store, "id2")
    store.open_run(with_ckpt).checkpoint_path(4).write_bytes(b"weights")
    queue.enqueue(plain, SLEEP_60, "cpu")
    queue.enqueue(with_ckpt, SLEEP_60, "cuda:0")
    (job_a, proc_a), (job_b, proc_b) = start_claimed(queue, SLEEP_60), start_claimed(queue, SLEEP_60)
    assert queue.reap() == []  # both alive

    os.kill(proc_a.pid, signal.SIGKILL)
    os.kill(proc_b.pid, signal.SIGKILL)
    proc_b.wait()  # b is reaped by its parent; a stays a zombie (its parent has not waited)
    wait_for(lambda: not process_alive(proc_a.pid, None))
    ended = {job.job_id: job for job in queue.reap()}
    assert set(ended) == {job_a, job_b}
    assert [ended[j].status for j in (job_a, job_b)] == ["failed", "failed"]
    assert "is gone" in ended[job_a].error
    assert (ended[job_a].resumable, ended[job_b].resumable) == (False, True)
    assert store.open_run(plain).record.status == "failed"
    assert store.open_run(plain).meta["error"] == ended[job_a].error
    assert queue.reap() == []
    proc_a.wait()


def test_reap_trusts_a_run_that_reports_done_and_detects_reused_pids(store: RunStore, queue: JobQueue) -> None:
    done_run, reused_run = new_run(store), new_run(store, "id2")
    queue.enqueue(done_run, QUICK, "cpu")
    queue.enqueue(reused_run, SLEEP_60, "cuda:0")
    done_job, proc = start_claimed(queue, QUICK)
    proc.wait()
    store.open_run(done_run).set_status("done", miou=0.5)  # what the engine does before exiting

    reused_job = queue.next_runnable().job_id
    queue.mark_running(reused_job, os.getpid())  # a live pid ...
    with store.index.connect() as conn:  # ... but the job's process started at another time
        conn.execute("UPDATE jobs SET proc_start = ? WHERE job_id = ?", (process_start_time(os.getpid()) + 1, reused_job))

    ended = {job.job_id: job.status for job in queue.reap()}
    assert ended == {done_job: "done", reused_job: "failed"}
    assert store.open_run(done_run).record.status == "done"


def test_worker_survives_kill_9_and_bad_jobs(store: RunStore, queue: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = queue.enqueue(new_run(store), SLEEP_60, "cpu")
    broken = queue.enqueue(new_run(store, "id2"), [str(store.root / "no-such-program")], "cpu")
    after = queue.enqueue(new_run(store, "id3"), QUICK, "cpu")
    worker = Worker(store, ["cpu"], poll_s=0.05, queue=queue)

    calls = {"n": 0}
    real_reap = queue.reap

    def flaky_reap(exclude=()):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("transient failure inside one iteration")
        return real_reap(exclude)

    monkeypatch.setattr(queue, "reap", flaky_reap)
    worker.start()
    try:
        wait_for(lambda: queue.get(victim).pid is not None)
        os.kill(queue.get(victim).pid, signal.SIGKILL)
        wait_for(lambda: queue.get(after).status == "done")
        assert worker.is_alive()
        assert calls["n"] >= 3  # the iteration that raised was followed by more
        assert queue.get(victim).status == "failed" and "SIGKILL" in queue.get(victim).error
        assert queue.get(broken).status == "failed" and "could not start" in queue.get(broken).error
    finally:
        worker.stop()
        kill_leftovers(queue)
    assert not worker.is_alive()


def test_new_objects_over_the_same_folder_see_everything(store: RunStore, queue: JobQueue, tmp_path: Path) -> None:
    runs = [new_run(store, f"id{i}") for i in range(3)]
    jobs = [queue.enqueue(run_id, QUICK, "cpu") for run_id in runs]
    queue.cancel(jobs[2])

    store2 = RunStore(tmp_path / "runs")
    queue2 = JobQueue(store2)
    assert {r.run_id for r in store2.list_runs()} == set(runs)
    assert [(j.job_id, j.status) for j in queue2.list_jobs()] == [(jobs[0], "queued"), (jobs[1], "queued"),
                                                                    (jobs[2], "cancelled")]
    assert queue2.latest_job(runs[1]).job_id == jobs[1]
    assert queue2.get(jobs[0]).command == QUICK

    # the jobs also survive losing the index: they are restored from each run's jobs.json
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.index.path}{suffix}").unlink(missing_ok=True)
    queue3 = JobQueue(RunStore(tmp_path / "runs"))
    assert [(j.job_id, j.status) for j in queue3.list_jobs()] == [(jobs[0], "queued"), (jobs[1], "queued"),
                                                                    (jobs[2], "cancelled")]


def test_concurrent_claims_never_return_a_job_twice(store: RunStore, tmp_path: Path) -> None:
    devices = ["cpu", "cuda:0", "cuda:1"]
    for i in range(9):
        JobQueue(store).enqueue(new_run(store, f"id{i}"), QUICK, devices[i % 3])
    claimed: list = []
    barrier = threading.Barrier(6)

    def claimer() -> None:
        queue = JobQueue(RunStore(tmp_path / "runs"))  # as separate app instances would
        barrier.wait()
        while (job := queue.next_runnable()) is not None:
            claimed.append(job)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [job.job_id for job in claimed]
    assert len(ids) == len(set(ids)) == 3  # one per device: the device is busy after its claim
    assert sorted(job.device for job in claimed) == sorted(devices)
    statuses = sorted(job.status for job in JobQueue(store).list_jobs())
    assert statuses == ["queued"] * 6 + ["running"] * 3


def test_enqueue_and_delete_validation(store: RunStore, queue: JobQueue) -> None:
    run_id = new_run(store)
    with pytest.raises(RunStoreError, match="no run"):
        queue.enqueue("20260101-000000-nope-0000", QUICK, "cpu")
    with pytest.raises(RunStoreError, match="non-empty list"):
        queue.enqueue(run_id, [], "cpu")
    job_id = queue.enqueue(run_id, QUICK, "cpu")
    with pytest.raises(RunStoreError, match="already has job"):
        queue.enqueue(run_id, QUICK, "cpu")
    with pytest.raises(RunStoreError, match="cancel it"):
        store.delete_run(run_id)
    with pytest.raises(RunStoreError, match="a job ends as one of"):
        queue.mark_ended(job_id, "queued")
    queue.cancel(job_id)
    store.delete_run(run_id)
    assert queue.list_jobs() == [] and store.list_runs() == []


PROBE = """import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "job": os.environ.get("PSS_JOB_ID"), "cwd": os.getcwd(), "pid": os.getpid()}))
sys.exit(3)
"""


def test_warm_worker_hands_module_jobs_to_its_spare(store: RunStore, queue: JobQueue, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobprobe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    worker = Worker(store, ["cpu"], poll_s=0.05, queue=queue, warm=True)
    try:
        worker.run_once()  # idle: the spare starts (importing torch and the training code)
        spare = worker._spare
        assert spare is not None and spare.poll() is None
        run_id = new_run(store)
        job_id = queue.enqueue(run_id, [sys.executable, "-m", "jobprobe", "a", "b c"], "cpu")
        worker.run_once()
        assert queue.get(job_id).pid == spare.pid  # the job runs in the spare, not a new process
        wait_for(lambda: queue.get(job_id).status not in ("queued", "running"), worker, deadline_s=120.0)
        job = queue.get(job_id)
        assert job.status == "failed" and "3" in (job.error or "")  # the module's exit status is the job's
        line = next(l for l in store.open_run(run_id).tail_log(20) if l.startswith("{"))
        probe = json.loads(line)  # its stdout went to the run's log, with the job's environment
        assert probe == {"argv": ["a", "b c"], "job": job_id, "cwd": os.getcwd(), "pid": spare.pid}

        wait_for(lambda: worker._spare is not None, worker)  # idle again: a new spare
        other = queue.enqueue(new_run(store), QUICK, "cpu")  # not a `python -m` command: starts cold
        worker.run_once()
        assert queue.get(other).pid != worker._spare.pid
        wait_for(lambda: queue.get(other).status == "done", worker)
    finally:
        kill_leftovers(queue)
        worker.stop()
    assert spare.poll() is not None
