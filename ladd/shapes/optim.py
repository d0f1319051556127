"""The zoo's one optimiser recipe: AdamW with linear warm-up and cosine decay."""

from __future__ import annotations

import math

import torch


def cosine_lr(step: int, total: int, warmup: int, final_fraction: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to `final_fraction`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(params, cfg: dict, steps: int):
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, cfg["warmup"]))
    return optimizer, schedule
