"""The zoo's one optimiser recipe: AdamW with linear warm-up and cosine decay to a tenth (`ladd.optim`), and its
training step."""

from __future__ import annotations

import time

import torch

from ladd.optim import lr_schedule


def make_optimizer(params, cfg: dict, steps: int):
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    return optimizer, lr_schedule(optimizer, cfg["warmup"], total=steps, final_fraction=0.1)


def training_step(loss, model, optimizer, schedule, ema, max_grad_norm: float, log, step: int, last: int,
                  started: float) -> None:
    """Backward, clip, update, advance the schedule and the EMA; every 50th step (and the last) one log row."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    schedule.step()
    ema.step(model.parameters())
    if step % 50 == 0 or step == last:
        log.write(step=step, loss=loss.item(), grad_norm=grad_norm.item(), lr=schedule.get_last_lr()[0],
                  minutes=(time.time() - started) / 60)
