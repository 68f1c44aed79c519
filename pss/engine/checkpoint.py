"""Checkpoints: everything needed so that a resumed run equals an uninterrupted one.

A checkpoint holds the model, the optimizers, the method's own networks (discriminators), the data
streams' positions and the global torch RNG state (dropout), plus a format version and the config.
Writes are atomic (``pss.fileio``), so a killed process never leaves a half-written file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pss.errors import CheckpointError
from pss.fileio import atomic_path

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically; returns ``path``.

    A failing ``torch.save`` (disk full, an unpicklable value) leaves the previous file at ``path`` and no
    temporary file behind. The temporary name (``.<name>.<random>.tmp``) never matches ``step_<N>.pt``, so
    ``Run.latest_checkpoint`` cannot pick up a half-written checkpoint.
    """
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; errors say what to do."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; list a run's checkpoints with `pss runs --show RUN`")
    try:
        # weights_only: a checkpoint is tensors and plain data; never unpickle arbitrary objects from a file
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt/truncated zip; report them all the same way
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); it is corrupt or "
                              "truncated — resume from an earlier checkpoint of the run or start again") from exc
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(f"{path}: not a pss checkpoint (no model state)")
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {data.get('format')!r}, this pss reads format "
                              f"{CHECKPOINT_FORMAT}; re-train the run with this version")
    return data


def load_model_weights(model: torch.nn.Module, path: Path, new_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load only the model weights of a checkpoint (``train.init_from``); returns the checkpoint's config.

    ``new_prefixes``: parameters of ``model`` under these prefixes (e.g. ``"context."``) may be absent from the
    checkpoint and keep their fresh initialisation (a context model started from a context-free No-DA model);
    every other key must match exactly.
    """
    data = load_checkpoint(path)
    try:
        missing, unexpected = model.load_state_dict(data["model"], strict=not new_prefixes)
        stray = [k for k in missing if not k.startswith(new_prefixes)] + list(unexpected)
        if stray:
            raise RuntimeError(f"keys that do not match: {', '.join(stray[:5])}")
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit this model ({exc}); the checkpoint was trained "
                              "with another backbone/context — use the same model settings") from exc
    return data.get("config", {})
