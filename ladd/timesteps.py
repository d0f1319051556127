"""The student's discrete timesteps (LADD Sec. 5): one object that training draws from and sampling reads.

The student trains on t in {1, 0.75, 0.5, 0.25}. For stability it first sees only low noise levels,
p = [0, 0, 0.5, 0.5]; after `switch_at` iterations (500 in the paper) the focus moves to full noise,
p = [0.7, 0.1, 0.1, 0.1], which refines single-step generation. The consistency sampler visits a subset of the
same timesteps: every (n/k)-th of the n training timesteps for k steps, i.e. [1], [1, 0.5] and
[1, 0.75, 0.5, 0.25] for 1, 2 and 4 steps ("for two step inference, we evaluate the model at t in [1, 0.5]").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StudentTimesteps:
    timesteps: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    warmup_probs: tuple[float, ...] = (0.0, 0.0, 0.5, 0.5)
    probs: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)
    switch_at: int = 500

    def __post_init__(self):
        t = self.timesteps
        if not t or t[0] != 1.0 or any(not 0 < b < a for a, b in zip(t, t[1:])):
            raise ValueError(f"student timesteps must start at 1.0 (sampling starts from pure noise) and decrease "
                             f"strictly within (0, 1], got {list(t)}")
        for name in ("warmup_probs", "probs"):
            p = getattr(self, name)
            if len(p) != len(t) or abs(sum(p) - 1) > 1e-6 or min(p) < 0:
                raise ValueError(f"{name} must be {len(t)} non-negative numbers summing to 1, got {list(p)}")
        if self.switch_at < 0:
            raise ValueError(f"switch_at must not be negative, got {self.switch_at}")

    def probabilities(self, iteration: int) -> tuple[float, ...]:
        return self.warmup_probs if iteration < self.switch_at else self.probs

    def sample(self, n: int, iteration: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n student timesteps for this iteration."""
        index = torch.multinomial(torch.tensor(self.probabilities(iteration)), n, replacement=True, generator=generator)
        return torch.tensor(self.timesteps)[index]

    @property
    def sampling_steps(self) -> tuple[int, ...]:
        """The step counts the consistency sampler supports: those that divide the number of timesteps."""
        n = len(self.timesteps)
        return tuple(k for k in range(1, n + 1) if n % k == 0)

    def sigmas(self, num_steps: int) -> list[float]:
        """The consistency sampler's sigmas for `num_steps` steps: every (n / num_steps)-th training timestep."""
        if num_steps not in self.sampling_steps:
            raise ValueError(f"a student trained on timesteps {list(self.timesteps)} samples with "
                             f"{', '.join(map(str, self.sampling_steps))} steps, not {num_steps}")
        return [float(t) for t in self.timesteps[:: len(self.timesteps) // num_steps]]

    def sigma_table(self) -> dict[int, list[float]]:
        """{steps: sigmas} for every supported step count."""
        return {k: self.sigmas(k) for k in self.sampling_steps}

    @classmethod
    def for_sampling(cls, timesteps) -> "StudentTimesteps":
        """The timesteps of a trained student (e.g. read from its folder), for sampling: probabilities uniform."""
        timesteps = tuple(float(t) for t in timesteps)
        uniform = tuple(1 / len(timesteps) for _ in timesteps) if timesteps else ()
        return cls(timesteps=timesteps, warmup_probs=uniform, probs=uniform, switch_at=0)
