"""The student's discrete timesteps and their warm-up schedule (LADD Sec. 5).

The student trains on t in {1, 0.75, 0.5, 0.25}. For stability it first sees only low noise levels,
p = [0, 0, 0.5, 0.5]; after `switch_at` iterations (500 in the paper) the focus moves to full noise,
p = [0.7, 0.1, 0.1, 0.1], which refines single-step generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StudentTimestepSchedule:
    timesteps: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    warmup_probs: tuple[float, ...] = (0.0, 0.0, 0.5, 0.5)
    probs: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)
    switch_at: int = 500

    def __post_init__(self):
        for name in ("warmup_probs", "probs"):
            p = getattr(self, name)
            if len(p) != len(self.timesteps) or abs(sum(p) - 1) > 1e-6 or min(p) < 0:
                raise ValueError(f"{name} must be {len(self.timesteps)} non-negative numbers summing to 1, got {p}")

    def probabilities(self, iteration: int) -> tuple[float, ...]:
        return self.warmup_probs if iteration < self.switch_at else self.probs

    def sample(self, n: int, iteration: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n student timesteps for this iteration."""
        index = torch.multinomial(torch.tensor(self.probabilities(iteration)), n, replacement=True, generator=generator)
        return torch.tensor(self.timesteps)[index]
