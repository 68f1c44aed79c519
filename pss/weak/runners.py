"""The pipelines' runners: method name -> runner (one literal dict, code_examples.md P3; the contract is
``pss.weak.stages``). A method whose class declares ``stages`` must have a line here (tests/test_pipelines.py)."""
from __future__ import annotations

from pss.weak.eps_run import run_eps
from pss.weak.stages import PipelineRunner
from pss.weak.transfer_run import run_transfer_pipeline

PIPELINES: dict[str, PipelineRunner] = {
    # the user's tags as supervision (issue 17)
    "eps_seg": run_eps,
    "eps_affinity": run_eps,
    "transfer": run_transfer_pipeline,
}
