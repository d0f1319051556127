"""The zoo's one optimiser recipe: AdamW with linear warm-up and cosine decay to a tenth (`ladd.optim`)."""

from __future__ import annotations

import torch

from ladd.optim import lr_schedule


def make_optimizer(params, cfg: dict, steps: int):
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    return optimizer, lr_schedule(optimizer, cfg["warmup"], total=steps, final_fraction=0.1)
