"""Method registry: one literal dict, name -> class (code_examples.md P3). Add a method by adding a file and a line."""
from __future__ import annotations

from typing import Any

from pss.configbase import from_dict
from pss.errors import ConfigError
from pss.methods.adaptseg import AdaptSeg
from pss.methods.advent import Advent
from pss.methods.eps_pipeline import EPSAffinity, EPSSeg
from pss.methods.base import Method, StepBatch, StepLosses
from pss.methods.fda import FDA, FDASelfTraining
from pss.methods.maxsquare import MaxSquare
from pss.methods.mrnet import MRNet, MRNetStage2
from pss.methods.pss import PSS, PSSStep2
from pss.methods.source_only import SourceOnly
from pss.methods.transfer import Transfer

METHODS: dict[str, type[Method]] = {  # the order of the paper's Tables 1-2 (the app lists them in this order)
    SourceOnly.name: SourceOnly,
    AdaptSeg.name: AdaptSeg,
    MaxSquare.name: MaxSquare,
    FDA.name: FDA,
    FDASelfTraining.name: FDASelfTraining,
    Advent.name: Advent,
    MRNet.name: MRNet,
    MRNetStage2.name: MRNetStage2,
    PSS.name: PSS,
    PSSStep2.name: PSSStep2,
    # the user's tags as supervision (issue 17): pipelines, run by pss.weak.runners.PIPELINES
    EPSSeg.name: EPSSeg,
    EPSAffinity.name: EPSAffinity,
    Transfer.name: Transfer,  # a pipeline (stages: objectness, cam, coarse, pnet; runner: pss.weak.runners)
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(METHODS)}")
    return METHODS[name]


def build_method(name: str, params: dict[str, Any], num_classes: int) -> Method:
    """Instantiate a registered method with its own config dataclass built from ``params`` (unknown keys rejected)."""
    cls = method_class(name)
    return cls(from_dict(cls.Config, params, where="method"), num_classes)


__all__ = ["METHODS", "Method", "StepBatch", "StepLosses", "build_method", "method_class"]
