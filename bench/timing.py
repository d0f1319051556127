"""Timing shared by the cost scripts (`scripts/ladd_results.py`, `scripts/full_size_cost.py`): steps timed in turn
in one process, and the plain fine-tuning iteration that a LADD iteration's cost is stated against."""

from __future__ import annotations

import statistics
import time

from ladd.config import LaddConfig
from ladd.losses import diffusion_loss
from ladd.train import distill_is_guided


def plain_iteration(student, optimizer, batch: dict, accelerator, max_grad_norm: float = 1.0) -> None:
    """A diffusion fine-tuning iteration of the student: the baseline a LADD iteration's cost is stated against."""
    with accelerator.autocast():
        loss = diffusion_loss(student, batch["latents"], batch["prompt_embeds"], batch["pooled_prompt_embeds"])
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(student.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def alternating_medians(steps: dict, repeats: int, warmup: int = 2, synchronize=lambda: None) -> dict[str, float]:
    """Median seconds of each `steps[name](i)`, the steps called in turn `warmup + repeats` times so that a noisy
    machine slows them alike; the first `warmup` rounds are not timed. `synchronize` waits for queued GPU work."""
    times = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            synchronize()
            started = time.perf_counter()
            step(i)
            synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(samples) for name, samples in times.items()}


def ladd_work(cfg: LaddConfig) -> str:
    """What one LADD iteration of `cfg` computes, in words, for a table row."""
    work = "student, teacher on fake with grad, teacher on real, heads, both updates"
    if cfg.distill.weight > 0:
        work += ", L_distill" + (" with the teacher's unconditional forward" if distill_is_guided(cfg) else "")
    if cfg.discriminator.mismatch_weight > 0:
        work += ", matching-aware term (teacher on real under a neighbour's prompt)"
    return work
