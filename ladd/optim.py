"""The one learning-rate schedule: linear warm-up, then constant (LADD) or a cosine decay (the zoo's pretraining)."""

from __future__ import annotations

import math

import torch


def lr_multiplier(step: int, warmup: int, total: int = 0, final_fraction: float = 0.1) -> float:
    """(step + 1) / warmup during the warm-up; then 1 (total = 0), or a cosine from 1 down to `final_fraction` at
    step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if total <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_schedule(optimizer, warmup: int, total: int = 0, final_fraction: float = 0.1):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, warmup, total, final_fraction))
