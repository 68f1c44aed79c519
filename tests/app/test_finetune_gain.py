"""Annotate -> fine-tune -> measured gain, end to end through the Annotate tab's service and the real job service
(issue 16, item 5): two unlabelled images get masks through the api, "Fine-tune with my annotations" queues a run
(a separate ``pss train`` process, 2 steps of the tiny preset, as the start run), and once it is done the view
shows FIoU / MIoU before and after, which are the numbers in the two runs' ``report.json``, and Compare can open
both runs.
"""
from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from annotate_support import USER, annotate_workspace
from inspect_support import TrainedWorkspace
from pss.api import annotate as ann
from pss.api.jobs import job_service, stop_job_service
from pss.api.users import forget_users, read_user
from pss.runs.procs import process_alive
from support import wait_for


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[TrainedWorkspace]:
    trained = annotate_workspace(tmp_path_factory, "finetune-gain")
    previous = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "PSS_WARM_JOBS")}
    # the job shares two cores with pytest: one thread, and no pre-started spare process
    os.environ.update(OMP_NUM_THREADS="1", PSS_WARM_JOBS="0")
    yield trained
    service = job_service(trained.ws, start=False)
    for job in service.queue.list_jobs(status="running"):
        if job.pid and process_alive(job.pid, job.proc_start):
            os.killpg(job.pid, signal.SIGKILL)
    stop_job_service(trained.ws)
    for key, value in previous.items():
        os.environ.pop(key, None) if value is None else os.environ.update({key: value})


def _annotate_two(trained: TrainedWorkspace) -> list[str]:
    """Submit masks for two unlabelled images (their first tag as a centred box on background) through the api."""
    forget_users(trained.ws)
    collection = read_user(trained.ws, USER)
    chosen = [r for r in collection.records if r.mask_path is None][:2]
    assert len(chosen) == 2
    for record in chosen:
        t = ann.target(trained.ws, USER, record.name)
        mask = np.zeros((t.height, t.width), np.uint8)
        mask[t.height // 4: 3 * t.height // 4, t.width // 4: 3 * t.width // 4] = record.tags[0] if record.tags else 15
        assert ann.submit(trained.ws, USER, record.name, mask).listed_for_training
    return [r.name for r in chosen]


def _table_row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_finetune_queues_a_run_and_shows_both_reports_numbers(trained: TrainedWorkspace) -> None:
    from pss_app.services import annotate as svc
    from pss_app.services.inspect import image_choices as compare_images

    ws = trained.ws
    names = _annotate_two(trained)
    assert {r.name for r in read_user(ws, USER).annotated_train} == set(names)
    evaluation = {r.name for r in read_user(ws, USER).eval_set}

    run_id, message = svc.launch_finetune(ws, USER, trained.pss_run)
    assert "queued" in message and svc.latest_finetune(ws, USER) == (trained.pss_run, run_id)
    text, finished = svc.finetune_result(ws, trained.pss_run, run_id)
    assert not finished and "| after |" in text  # the table is there while it runs, "after" still empty

    wait_for(lambda: svc.finetune_result(ws, trained.pss_run, run_id)[1], deadline_s=600, poll_s=1.0)
    text, finished = svc.finetune_result(ws, trained.pss_run, run_id)
    assert finished and f"fine-tune `{run_id}`: **done**" in text, text

    store = ws.store()
    run = store.open_run(run_id)
    assert run.config["train"]["init_from"] == trained.pss_run and run.config["train"]["annotated_weight"] == 1.0
    reports = {"before": store.open_run(trained.pss_run).read_report(),
               "after": run.read_report()}
    for label, report in reports.items():
        assert report is not None
        row = _table_row(text, label)
        assert row[2] == f"{report['fiou'] * 100:.1f}" and row[3] == f"{report['miou']['pss'] * 100:.1f}", (label, row)
        # scored on the held-out evaluation images only: never the two annotated training images
        scored = {i["name"] for i in report["images"]}
        assert scored == evaluation and not scored & set(names) and row[4] == str(len(evaluation))
    gain = _table_row(text, "gain")
    expected = (reports["after"]["fiou"] - reports["before"]["fiou"]) * 100
    assert re.fullmatch(r"[+-]\d+\.\d", gain[2]) and abs(float(gain[2]) - expected) <= 0.051
    assert "different images" not in text

    # "Open both in Compare": both runs ticked among the finished runs, on the image being annotated
    choices = compare_images(ws, USER)
    chosen = svc.finetune_compare(ws, USER, trained.pss_run, run_id, names[0], choices)
    assert chosen.runs == [trained.pss_run, run_id]
    assert {trained.pss_run, run_id} <= {v for _, v in chosen.run_choices}
    assert chosen.image == names[0]
