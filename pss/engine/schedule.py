"""Learning-rate schedule."""
from __future__ import annotations

import torch


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """``lr · (1 − step/total)^power`` (DeepLab/ADVENT/PSS poly schedule), clamped at 0 past the end."""
    return base_lr * max(0.0, 1.0 - step / total_steps) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, power: float) -> None:
    """Apply the poly schedule to every parameter group, scaling each group's ``initial_lr``."""
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["initial_lr"], step, total_steps, power)
