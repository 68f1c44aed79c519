"""The pipelines' runners: method name -> runner (one literal dict, code_examples.md P3; the contract is
``pss.weak.stages``). A method whose class declares ``stages`` must have a line here (tests/test_pipelines.py)."""
from __future__ import annotations

from pss.weak.stages import PipelineRunner
from pss.weak.transfer_run import run_transfer_pipeline

PIPELINES: dict[str, PipelineRunner] = {
    "transfer": run_transfer_pipeline,
}
