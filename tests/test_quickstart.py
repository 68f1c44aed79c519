"""The one-action chain (``pss.api.quickstart``) and "start after run X" (``pss.api.waiting``), with real job processes on
a tiny demo workspace and the ``tiny`` preset. Deadlines only stop a broken test from hanging."""
from __future__ import annotations

import functools
import os
import signal
from collections.abc import Iterator

import pytest

from pss.api import quickstart as qs
from pss.api.jobs import JobService, stop_job_service
from pss.api.launch_form import LaunchRequest
from pss.config import config_to_dict
from pss.data.demo import DemoConfig, generate_demo
from pss.errors import ConfigError
from pss.experiments.reuse import canonical
from pss.runs import JobQueue, RunStore
from pss.runs.procs import process_alive
from pss.workspace import Workspace
from support import wait_for as support_wait_for

TINY = DemoConfig(num_source=16, num_users=2, images_per_user=12)


wait_for = functools.partial(support_wait_for, deadline_s=300.0)  # the demo comparison trains four runs


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("quickstart") / "ws"
    generate_demo(root / "data", seed=0, config=TINY)
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", qs.PRESET_ENV, "PSS_JOB_POLL_S")}
    os.environ.update(OMP_NUM_THREADS="1", PSS_QUICKSTART_PRESET="tiny", PSS_JOB_POLL_S="0.1")
    workspace = Workspace(root)
    yield workspace
    stop_job_service(workspace)
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.update({key: value})
    for job in JobQueue(RunStore(root / "runs")).list_jobs(status="running"):  # never leave a job behind
        if job.pid and process_alive(job.pid, job.proc_start):
            os.killpg(job.pid, signal.SIGKILL)


def test_the_chain_is_the_tables_recipe(ws: Workspace) -> None:
    """Four runs: the shared context-free No-DA run, ADVENT and OURS-S1 from it, OURS-S2 from OURS-S1."""
    chain = qs._chain(ws, "id1", "tiny")
    assert [(s.key, s.method, s.parent, s.shown, s.context) for s in chain.steps] == [
        ("source", "source_only", None, True, "none"), ("advent", "advent", "source", True, "none"),
        ("pss", "pss", "source", True, "group"), ("pss_s2", "pss_s2", "pss", True, "group")]
    assert [s.steps for s in chain.steps] == [3, 1, 1, 1]  # tiny: 3 steps, adaptation a third (at least 1)
    for step in chain.steps:  # the form's launch request resolves to the config `pss experiment` trains
        start = "r0" if step.parent else None
        request = qs._request(chain, step, "id1", start, "tiny", "cpu")
        from pss.config import build_config

        launched = build_config("tiny", request.overrides(), base={"data": {"root": str(ws.data)}})
        assert canonical(config_to_dict(launched)) == canonical(config_to_dict(qs._config(chain, step, "id1", start)))


def test_estimate_before_anything_ran_uses_the_measured_constants(ws: Workspace) -> None:
    state = qs.status(ws, "id2")
    assert [r.status for r in state.runs] == ["not started"] * 4 and not state.active
    estimate = qs.estimate(ws, state)
    expected = sum(qs.JOB_START_S + r.steps * qs.MEASURED["tiny"][(r.method, r.context)][0]
                   + qs.MEASURED["tiny"][(r.method, r.context)][1] for r in state.runs)
    assert estimate.total_s == pytest.approx(expected) and estimate.device == "cpu"
    assert estimate.bases == ["measured tiny runs on two CPU cores"]
    # the demo's fallback: every run of the chain measured (bench/quickstart_bench.py), and said so
    empty = Workspace(ws.root.parent / "no-runs")
    bases = {m: qs.rate_for(empty, "demo", m, c, "cpu", {}).basis for m, c in qs.MEASURED["demo"]}
    assert set(bases.values()) == {"measured demo runs on two CPU cores"} and len(bases) == 4
    with pytest.raises(ConfigError, match="unknown user"):
        qs.start(ws, "id7")


def test_a_run_launched_after_another_waits_then_starts_or_is_cancelled(ws: Workspace) -> None:
    service = JobService(ws, poll_s=0.1, grace_s=5.0).start()
    try:
        def request(**changes) -> LaunchRequest:
            return LaunchRequest(**{**dict(user="id2", method="source_only", preset="tiny", steps=2, device="cpu"),
                                    **changes})

        parent = service.launch(request(steps=3))
        child = service.launch(request(method="advent", init_from=parent.run_id), after=parent.run_id)
        assert child.job_id == "" and service.waiting_for(child.run_id) == parent.run_id
        assert service.queue.latest_job(child.run_id) is None  # no job until its parent is done
        wait_for(lambda: service.store.index.get_run(child.run_id).status == "done")
        assert service.store.index.get_run(parent.run_id).status == "done"
        assert service.waiting_for(child.run_id) is None
        assert service.store.open_run(child.run_id).config["train"]["init_from"] == parent.run_id

        # a waiting run can be cancelled (it never had a job); one waiting for a cancelled run is cancelled too
        first = service.launch(request(steps=50))
        second = service.launch(request(method="advent", init_from=first.run_id), after=first.run_id)
        third = service.launch(request(method="advent", init_from=second.run_id), after=second.run_id)
        assert service.cancel(second.run_id) == "cancelled"
        wait_for(lambda: service.store.index.get_run(third.run_id).status == "cancelled")
        assert second.run_id in service.store.open_run(third.run_id).meta["error"]
        service.cancel(first.run_id)
        wait_for(lambda: service.store.index.get_run(first.run_id).status in ("cancelled", "done"))
        with pytest.raises(ConfigError, match="resume or relaunch"):
            service.launch(request(method="advent", init_from=second.run_id), after=second.run_id)
    finally:
        service.stop()


def test_one_action_trains_the_chain_through_the_queue_and_pss_experiment_reuses_it(ws: Workspace) -> None:
    from pss.experiments import ExperimentOptions, run_experiment

    state = qs.start(ws, "id1")
    assert state.runs[0].status in ("queued", "running")
    assert [r.status for r in state.runs[1:]] == ["waiting"] * 3
    wait_for(lambda: not qs.status(ws, "id1").active)
    state = qs.status(ws, "id1")
    assert state.done, [(r.label, r.status, r.error) for r in state.runs]
    assert len(state.compare_runs) == 4
    assert qs.estimate(ws, state).total_s == 0.0
    again = qs.start(ws, "id1")  # pressing it again launches nothing
    assert [r.run_id for r in again.runs] == [r.run_id for r in state.runs]
    assert all("reused" in m for m in again.messages)
    # the same cells for `pss experiment`: every one is reused, none trained
    result = run_experiment(ws, ExperimentOptions(table="table1", users=["id1"], methods=list(qs.ROWS),
                                                  preset="tiny", jobs=1, console=False), say=lambda text: None)
    cells = [c for c in result.cells if c.row in qs.ROWS]
    assert {c.run_id for c in cells} == set(state.compare_runs)
    assert {c.action for c in cells} <= {"reused", "shared"}  # only its "No-DA continued" controls were trained
    # the estimate of another user's chain is now measured on these runs
    assert any("here" in basis for basis in qs.estimate(ws, qs.status(ws, "id2")).bases)
