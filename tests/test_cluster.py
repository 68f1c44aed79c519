"""``pss experiment --backend ray``: cells as Ray tasks on a local Ray (2 CPUs, started once for the module).

The Ray backend writes the same table as the local process backend; a second invocation reuses every cell; a
Ctrl-C cancels the running cell (its run is marked cancelled) and the next invocation resumes it; without Ray,
``--backend ray`` says what to install.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pss.config import PRESET_DIR
from pss.data.demo import DemoConfig, generate_demo
from pss.errors import ConfigError
from pss.experiments import ExperimentOptions, run_experiment
from pss.experiments.backends import ctrl_c_interrupts, make_backend
from pss.workspace import Workspace
from support import wait_for


def test_backend_ray_without_ray_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "pss\[cluster\]"'):
        make_backend("ray", 2, "cpu")
    assert make_backend("local", 1, "cpu").parallel is False  # the local backend needs no Ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    # one local Ray for the module (start-up is the expensive part); the backend uses it and leaves it running
    # started with Python's default SIGINT handler: Ray's processes would inherit a SIG_IGN an earlier test left
    # behind, and Ray cancels a task by SIGINT in its worker
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("cluster-ws")
    generate_demo(root / "data", seed=0, config=DemoConfig(num_source=16, num_users=2, images_per_user=12))
    return Workspace(root)


def _options(backend: str, tag: str, **changes: object) -> ExperimentOptions:
    values: dict = dict(table="table3", methods=["none"], steps=1, source_steps=1, preset="tiny", device="cpu",
                        jobs=2, console=False, backend=backend, tag=tag)
    return ExperimentOptions(**{**values, **changes})


def test_ray_cells_write_the_same_table_as_local_processes(ray_cluster: None, workspace: Workspace) -> None:
    said: list[str] = []
    local = run_experiment(workspace, _options("local", "local"), said.append)
    on_ray = run_experiment(workspace, _options("ray", "ray"), said.append)
    assert not local.failed and not on_ray.failed
    # 2 users x (ADVENT, its control "No-DA continued"): the same numbers, from runs of their own (tag ray)
    for metric in ("FIoU", "MIoU"):
        assert on_ray.tables[metric].equals(local.tables[metric]), (on_ray.tables[metric], local.tables[metric])
    assert on_ray.trained == local.trained == 5 and {c.run_id for c in on_ray.cells}.isdisjoint(
        {c.run_id for c in local.cells})
    assert any(line.startswith("[table3] cells run as Ray tasks on the Ray this process was already connected to: "
                               "2 CPUs, 0 GPUs; each cell asks for 1 CPU") for line in said), said
    again = run_experiment(workspace, _options("ray", "ray"), said.append)
    assert again.trained == 0 and {c.action for c in again.cells} <= {"reused", "shared"}


def _sigint_state() -> str:
    """How SIGINT stands in the main thread: its Python handler, and whether the thread blocks, ignores or catches
    it (/proc: what the process really does, whatever Python believes)."""
    status = Path(f"/proc/self/task/{threading.main_thread().native_id}/status")
    masks = dict(line.split(":", 1) for line in status.read_text().splitlines()
                 if line.startswith(("SigBlk", "SigIgn", "SigCgt"))) if status.exists() else {}
    bit = 1 << (signal.SIGINT - 1)
    return (f"handler {signal.getsignal(signal.SIGINT)!r}, "
            + ", ".join(f"{k} {'yes' if int(v, 16) & bit else 'no'}" for k, v in masks.items()))


@pytest.mark.parametrize("left_behind", ["ignored", "swallowing handler", "blocked", "ignored behind Python's back"])
def test_ctrl_c_interrupts_an_experiment_whatever_sigint_handling_was_left_behind(left_behind: str) -> None:
    """An earlier test or library that left SIGINT ignored, handled by a handler that does not raise (an asyncio
    runner's cancels its main task on the first Ctrl-C), blocked in the main thread, or ignored by a C library
    (``signal(2)``, which Python's ``getsignal`` does not see) must not turn an experiment's Ctrl-C into nothing
    (``ctrl_c_interrupts``); what Python knows of is put back afterwards."""
    swallowed: list[int] = []

    def swallow(signum: int, frame: object) -> None:
        swallowed.append(signum)

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # each case starts from Python's default, whatever
    # an earlier test left (put back in the finally)
    if left_behind == "blocked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    elif left_behind == "ignored behind Python's back":
        import ctypes

        ctypes.CDLL(None).signal(signal.SIGINT, ctypes.c_void_p(1))  # SIG_IGN, set from C
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python does not know
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN if left_behind == "ignored" else swallow)
    left = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c_interrupts():
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
                for _ in range(100):  # the handler runs between bytecodes: well before this loop ends
                    time.sleep(0.01)
        assert signal.getsignal(signal.SIGINT) is left  # put back
        if left_behind == "blocked":
            assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        elif left_behind != "ignored behind Python's back":
            signal.raise_signal(signal.SIGINT)  # outside: what was left behind handles it again
            assert swallowed == ([] if left_behind == "ignored" else [signal.SIGINT])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)


def test_a_cancelled_ray_cell_is_marked_cancelled_and_resumed_next_time(ray_cluster: None, workspace: Workspace,
                                                                        tmp_path: Path) -> None:
    preset = yaml.safe_load((PRESET_DIR / "tiny.yaml").read_text())
    preset["train"].update(checkpoint_every=5)
    (tmp_path / "tiny5.yaml").write_text(yaml.safe_dump(preset))
    opts = _options("ray", "cancel", table="table1", methods=["source_only"], users=["id1"], source_steps=400,
                    preset=str(tmp_path / "tiny5.yaml"))

    def run_of_this_test() -> object:
        runs = workspace.store().list_runs(search="cancel")
        return runs[0] if runs else None

    interrupter_failed: list[BaseException] = []
    before_ctrl_c: list[str] = []

    def ctrl_c_once_checkpointed() -> None:
        # a generous deadline: on a loaded two-core machine Ray's start and the first checkpoint can take minutes
        try:
            wait_for(lambda: (run := run_of_this_test()) is not None and
                     workspace.store().open_run(run.run_id).latest_checkpoint() is not None, deadline_s=900)
        except BaseException as exc:  # reported by the test below, not lost in the thread
            interrupter_failed.append(exc)
            return
        before_ctrl_c.append(_sigint_state())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    interrupter = threading.Thread(target=ctrl_c_once_checkpointed, daemon=True)
    interrupter.start()
    try:
        result = run_experiment(workspace, opts, lambda _: None)
    except KeyboardInterrupt:
        result = None
    interrupter.join(timeout=5)
    assert not interrupter_failed, interrupter_failed
    # the state of SIGINT right before the Ctrl-C says why, should it not interrupt the experiment again
    assert result is None, (f"the Ctrl-C did not interrupt the experiment (SIGINT in the main thread right before "
                            f"it: {before_ctrl_c}); cells: {[(c.row, c.status, c.note) for c in result.cells]}")
    run = workspace.store().open_run(run_of_this_test().run_id)  # type: ignore[union-attr]
    wait_for(lambda: run.meta["status"] == "cancelled", deadline_s=30)
    stopped_at = max(e["step"] for e in run.events("train"))
    assert stopped_at < 400

    result = run_experiment(workspace, opts, lambda _: None)
    assert not result.failed and run.meta["status"] == "done"
    assert len(workspace.store().list_runs(search="cancel")) == 1  # the same run, resumed (no second run)
    steps = [e["step"] for e in run.events("train")]
    # the second invocation continued after the run's last checkpoint (a multiple of 5, at most where it stopped;
    # equal when the cancel came right after a checkpoint), not from step 1
    resumed_from = steps[steps.index(stopped_at) + 1]
    assert steps[-1] == 400 and 1 < resumed_from <= stopped_at + 1 and (resumed_from - 1) % 5 == 0
