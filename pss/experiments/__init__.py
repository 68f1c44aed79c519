"""The paper's experiments (Tables 1-5) as one command: ``pss experiment TABLE`` (see ``pss.experiments.tables``)."""
from __future__ import annotations

from pss.experiments.tables import (TABLES, Cell, ExperimentOptions, ExperimentResult, RowSpec, run_experiment,
                                    select_rows)

__all__ = ["TABLES", "Cell", "ExperimentOptions", "ExperimentResult", "RowSpec", "run_experiment", "select_rows"]
