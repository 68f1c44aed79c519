"""The Runs tab's launch form: its choices and starting values, and queueing a run from its values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pss.api import Status, Workspace, job_service
from pss.api.devices import AUTO_DEVICE
from pss.api.launch_form import (CONTEXT_MODES, DEFAULT_PRESET, METHOD_DEFAULT, RUN_ON_LOCAL, RUN_ON_RAY, LaunchRequest,
                                 method_default_context, preset_defaults)
from pss.api.runs import registered_methods

PRESETS = [DEFAULT_PRESET, "tiny", "paper"]


def method_choices() -> list[str]:
    """Every registered training method, in the registry's order."""
    return registered_methods()


def context_choices(method: str) -> list[tuple[str, str]]:
    """``(label, value)`` pairs: the method's default first, then each mode."""
    return [(f"method default ({method_default_context(method)})", METHOD_DEFAULT),
            *[(mode, mode) for mode in CONTEXT_MODES]]


def form_defaults(preset: str) -> dict[str, Any]:
    """Starting values of the form's number fields for ``preset`` (``k``, ``steps``, ``lr``, ``batch_size``,
    ``seed``) and its method."""
    return preset_defaults(preset)


@dataclass(frozen=True)
class RunOnChoices:
    """The form's "Run on" radio: ``(label, value)`` choices, whether the Ray choice can be taken, and the line
    under it (where Ray jobs go, or what to install)."""

    choices: list[tuple[str, str]]
    ray_available: bool
    info: str


def run_on_choices(ws: Workspace) -> RunOnChoices:
    """"this machine" and the Ray cluster of the job service (disabled, saying what to install, without Ray)."""
    option = job_service(ws, start=False).ray_option()
    return RunOnChoices([("this machine", RUN_ON_LOCAL), (option.label, RUN_ON_RAY)], option.available,
                        option.message)


@dataclass
class LaunchResult:
    """The new run's id and the message for the form (``⚠`` lines for warnings)."""

    run_id: str
    message: str


def launch_from_form(ws: Workspace, preset: str, user: str, method: str, context: str, k: float | None,
                     steps: float | None, lr: float | None, batch_size: float | None, seed: float | None,
                     device: str, init_from: str | None, run_on: str | None = RUN_ON_LOCAL) -> LaunchResult:
    """Validate the form and queue the run (ConfigError/RunStoreError with the reason, before anything starts).
    ``run_on``: ``local`` (this machine, the default) or ``ray`` (the job service's Ray cluster)."""
    request = LaunchRequest(user=user, method=method, context=context or METHOD_DEFAULT, k=k, steps=steps, lr=lr,
                            batch_size=batch_size, seed=seed, device=device or AUTO_DEVICE,
                            init_from=init_from or None, preset=preset or DEFAULT_PRESET,
                            run_on=run_on or RUN_ON_LOCAL)
    service = job_service(ws)
    launched = service.launch(request)
    job = service.queue.get(launched.job_id)
    message = f"run `{launched.run_id}` {job.status} on `{launched.device}`"
    return LaunchResult(launched.run_id, "  \n".join([message, *[f"⚠ {w}" for w in launched.warnings]]))


def init_choices(ws: Workspace) -> list[tuple[str, str]]:
    """``(label, run id)`` of runs with a checkpoint, for the form's init-from dropdown (first: none)."""
    choices = [("none (ImageNet / random init)", "")]
    for record in job_service(ws).store.list_runs():
        if record.status == Status.DONE:
            choices.append((f"{record.method} · {record.user} · {record.run_id}", record.run_id))
    return choices


__all__ = ["PRESETS", "LaunchResult", "RunOnChoices", "context_choices", "form_defaults", "init_choices",
           "launch_from_form", "method_choices", "run_on_choices"]
