"""A run's progress from its events (``metrics.jsonl``): the step series and the measured throughput.

Events: ``train`` (step, lr, seconds, losses), ``eval`` (fiou, miou), ``checkpoint`` and ``end``. A resumed run
logs the steps after its checkpoint again; the later events win (``latest_series``), so curves never zig-zag.
Plain functions over event dicts, used by the app's Runs view and by tests of the engine's resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def latest_series(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Events of ``kind`` in step order, where a later event replaces every earlier one at the same or a later
    step (a resumed run repeats the steps after its checkpoint)."""
    series: list[dict[str, Any]] = []
    for event in events:
        if event.get("kind") != kind:
            continue
        while series and series[-1]["step"] >= event["step"]:
            series.pop()
        series.append(event)
    return series


@dataclass
class Progress:
    """Step counts and speed of a run from its train events. ``eta_s``/rates are None until measurable."""

    step: int
    total: int
    steps_per_s: float | None
    images_per_s: float | None
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


def measure_progress(train: list[dict[str, Any]], total: int, batch_size: int, running: bool,
                     window: int = 20) -> Progress:
    """Throughput over the last ``window`` train events (after a resume, only the current segment counts);
    ETA = remaining steps / throughput, for a running run."""
    step = train[-1]["step"] if train else 0
    segment = train[-window:]
    for i in range(len(segment) - 1, 0, -1):
        if segment[i].get("seconds", 0) < segment[i - 1].get("seconds", 0):  # the clock restarts at a resume
            segment = segment[i:]
            break
    rate = None
    if len(segment) >= 2 and segment[-1]["time"] > segment[0]["time"]:
        rate = (segment[-1]["step"] - segment[0]["step"]) / (segment[-1]["time"] - segment[0]["time"])
    elif len(train) == 1 and train[0].get("seconds"):
        rate = train[0]["step"] / train[0]["seconds"]  # first event: steps since the loop started
    eta = (max(0, total - step) / rate) if (rate and running) else None
    return Progress(step, total, rate, rate * batch_size if rate else None, eta)


__all__ = ["Progress", "latest_series", "measure_progress"]
