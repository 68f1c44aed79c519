"""Method registry: one literal dict, name -> class (code_examples.md P3). Add a method by adding a file and a line."""
from __future__ import annotations

from typing import Any

from pss.configbase import from_dict
from pss.errors import ConfigError
from pss.methods.advent import Advent
from pss.methods.base import Method, StepBatch, StepLosses
from pss.methods.pss import PSS, PSSStep2
from pss.methods.source_only import SourceOnly

METHODS: dict[str, type[Method]] = {
    SourceOnly.name: SourceOnly,
    Advent.name: Advent,
    PSS.name: PSS,
    PSSStep2.name: PSSStep2,
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
