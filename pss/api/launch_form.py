"""The Runs form as a model: ``LaunchRequest`` (the form's values), their checks, and ``validate_launch`` (a request
to the resolved config it trains, or ``ConfigError`` saying what to change; nothing is written).

Nothing here imports torch at module import: the config modules (which import the model code) are imported
inside the functions that need them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pss.api.devices import AUTO_DEVICE
from pss.errors import ConfigError, RunStoreError
from pss.models.context import CONTEXT_MODES
from pss.runs import RunStore
from pss.workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from pss.config import Bounds, ExperimentConfig

DEFAULT_PRESET = "demo"
METHOD_DEFAULT = "default"  # context mode: the method's own default (``group`` for PSS, ``none`` otherwise)
RUN_ON_LOCAL = "local"  # the job runs as a process of this machine (the default)
RUN_ON_RAY = "ray"  # the job runs as a task on the Ray cluster of the job service (``pss.runs.ray_jobs``)
RUN_ON = (RUN_ON_LOCAL, RUN_ON_RAY)


@dataclass
class LaunchRequest:
    """The Runs form. ``None`` numbers keep the preset's value; ``context="default"`` the method's own mode.

    ``init_from``: a run id of this workspace (its latest checkpoint) or a ``.pt`` path. ``extra``: further
    dotted overrides (``train.log_every=1``). ``run_on``: ``local`` (this machine) or ``ray`` (the job service's
    Ray cluster).
    """

    user: str
    method: str = "pss"
    context: str = METHOD_DEFAULT
    k: float | None = None
    steps: float | None = None
    lr: float | None = None
    batch_size: float | None = None
    seed: float | None = None
    device: str = AUTO_DEVICE
    init_from: str | None = None
    preset: str = DEFAULT_PRESET
    extra: tuple[str, ...] = ()
    run_on: str = RUN_ON_LOCAL

    def overrides(self) -> list[str]:
        """Dotted overrides of the preset (values checked: whole numbers where a count is meant)."""
        out = [f"method.name={self.method}", f"data.user={self.user}"]
        if self.context not in (None, "", METHOD_DEFAULT):
            if self.context not in CONTEXT_MODES:
                raise ConfigError(f"context mode {self.context!r} is not one of {', '.join(CONTEXT_MODES)} "
                                  f"(or {METHOD_DEFAULT!r} for the method's own)")
            out.append(f"model.context.mode={self.context}")
        from pss.config import BATCH_SIZE, K, LR, SEED, STEPS

        # batch norm needs two images per batch: the form asks for 2 where the config allows 1
        for bounds, value, minimum in ((K, self.k, None), (STEPS, self.steps, None), (BATCH_SIZE, self.batch_size, 2),
                                       (SEED, self.seed, None)):
            if value is not None:
                out.append(f"{bounds.name}={_whole(bounds, value, minimum)}")
        if self.lr is not None:
            lr = _form_number(LR.name, self.lr)
            if not lr > 0:
                raise ConfigError(f"learning rate must be > 0 (got {self.lr})")
            LR.check(lr)
            out.append(f"train.lr={lr!r}")
        if self.init_from:
            out.append(f"train.init_from={self.init_from}")
        return out + list(self.extra)


def _form_number(name: str, value: Any) -> float:
    """A form value as a finite float (numbers, or text such as ``5e-4``), else ConfigError naming the field."""
    text = value.strip() if isinstance(value, str) else value
    try:
        if isinstance(text, bool):
            raise TypeError
        number = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name.split('.')[-1].replace('_', ' ')} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name.split('.')[-1].replace('_', ' ')} must be a finite number, got {value!r}")
    return number


def _whole(bounds: Bounds, value: Any, minimum: int | None = None) -> int:
    """A form value as a whole number inside ``bounds`` (``minimum`` raises its lower end), else ConfigError."""
    from pss.config import show_number

    number = _form_number(bounds.name, value)
    low = bounds.minimum if minimum is None else minimum
    if not number.is_integer() or not low <= number <= bounds.maximum:
        why = "batch norm needs two images per batch" if bounds.name == "train.batch_size" else \
            (bounds.why or "it is a count")
        raise ConfigError(f"{bounds.name.split('.')[-1].replace('_', ' ')} must be a whole number from "
                          f"{show_number(low)} to {show_number(bounds.maximum)} (got {value}: {why})")
    return int(number)


def method_default_context(method: str) -> str:
    """The context mode a method uses when the form leaves it at ``default``."""
    from pss.methods import method_class

    return str(method_class(method).default_context)


def preset_defaults(preset: str = DEFAULT_PRESET) -> dict[str, Any]:
    """The form's starting values from a preset: ``method``, ``k``, ``steps``, ``lr``, ``batch_size``, ``seed``."""
    from pss.config import build_config

    config = build_config(preset)
    return {"method": config.method_name, "k": config.grouping.k, "steps": config.train.steps,
            "lr": config.train.lr, "batch_size": config.train.batch_size, "seed": config.train.seed}


def validate_launch(ws: Workspace, request: LaunchRequest, store: RunStore | None = None,
                    after: str | None = None) -> ExperimentConfig:
    """The resolved config of ``request``, or ``ConfigError`` saying what to change (nothing is written).

    ``after``: the run this launch will wait for (``JobService.launch``); an init-from run that is ``after`` may
    still lack its checkpoint (it is checked for model settings only)."""
    from pss.config import build_config, config_to_dict
    from pss.data.pss_layout import list_users

    if request.run_on not in RUN_ON:
        raise ConfigError(f"run on {request.run_on!r}: choose {' or '.join(map(repr, RUN_ON))}")
    users = list_users(Path(ws.data) / "personal") if (Path(ws.data) / "personal").is_dir() else []
    if request.user not in users:
        raise ConfigError(f"unknown user {request.user!r}; users of this workspace: {', '.join(users) or 'none'}")
    config = build_config(request.preset, request.overrides(), base={"data": {"root": str(ws.data)}})
    init = config.train.init_from
    if init:
        if init.endswith(".pt") or "/" in init:
            # checkpoints are pickles (arbitrary code when loaded): only those our own runs wrote are accepted
            path = Path(init).expanduser().resolve()
            if not path.is_relative_to(Path(ws.runs).resolve()) or not path.is_file():
                raise ConfigError(f"init-from checkpoint {init} is not a checkpoint file under {ws.runs}; "
                                  "pick a run (its latest checkpoint is used)")
        else:
            store = store or RunStore(ws.runs)
            try:
                source = store.open_run(init)
            except RunStoreError as exc:
                raise ConfigError(f"init-from: {exc}") from exc
            if source.latest_checkpoint() is None and init != after:
                raise ConfigError(f"init-from run {init} has no checkpoint yet; wait until it is done")
            mine, theirs = config_to_dict(config)["model"], source.config.get("model", {})
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if (theirs.get("context") or {}).get("mode") == "none":
                # a context model starts from a context-free one with fresh context layers (the engine's init)
                diff = [k for k in diff if k != "context"]
            if diff:
                raise ConfigError(f"init-from run {init} has other model settings ({', '.join(diff)}: "
                                  f"{[theirs.get(k) for k in diff]} there, {[mine.get(k) for k in diff]} here); "
                                  "its weights would not fit — pick the same context mode and backbone")
    return config


__all__ = ["CONTEXT_MODES", "DEFAULT_PRESET", "METHOD_DEFAULT", "RUN_ON", "RUN_ON_LOCAL", "RUN_ON_RAY",
           "LaunchRequest", "method_default_context", "preset_defaults", "validate_launch"]
