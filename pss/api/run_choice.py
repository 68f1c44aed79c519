"""Finished runs as the Inspect and Compare pickers list them."""
from __future__ import annotations

from dataclasses import dataclass

from pss.api.runs import METHOD_LABELS
from pss.status import Status
from pss.workspace import Workspace


@dataclass(frozen=True)
class RunChoice:
    """A finished run as the Inspect / Compare pickers list it."""

    run_id: str
    user: str | None
    method: str
    fiou: float | None
    miou: float | None
    context: str

    @property
    def method_label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method)

    @property
    def short(self) -> str:
        """``OURS-S1 #0a88``: the paper's row name and the run id's random suffix."""
        return f"{self.method_label} #{self.run_id.rsplit('-', 1)[-1]}"

    @property
    def label(self) -> str:
        score = "" if self.fiou is None else f" · FIoU {self.fiou * 100:.1f}"
        return f"{self.short}{score} · {self.run_id}"


def done_runs(ws: Workspace, user: str | None = None) -> list[RunChoice]:
    """Finished runs (of ``user``), newest first."""
    out = []
    for record in ws.store().list_runs(user=user, status=Status.DONE):
        context = str(record.config.get("model", {}).get("context", {}).get("mode", "none"))
        out.append(RunChoice(record.run_id, record.user, record.method, record.fiou, record.miou, context))
    return out


__all__ = ["RunChoice", "done_runs"]
