"""Sampling: the flow consistency sampler, via diffusers' own scheduler, and a pipeline folder's call defaults.

The consistency sampler (LADD Sec. 5, after Song et al.) alternates "predict x0" and "renoise to the next t":
    x0 = x_t - t * F(x_t, t);  x_next = (1 - t_next) * x0 + t_next * eps.
`FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)` performs exactly this step, so a LADD student
samples through the stock `StableDiffusion3Pipeline`; only the sigmas have to be the student's training
timesteps. The scheduler's `shift` remaps sigmas (SD3 uses 3.0), so students use shift=1.0.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ladd.conditioning import predict_velocity
from ladd.flow import denoise, renoise

# The student's discrete timesteps (paper Sec. 5) and the sigmas used for each number of sampling steps.
STUDENT_TIMESTEPS = (1.0, 0.75, 0.5, 0.25)
CONSISTENCY_SIGMAS = {1: [1.0], 2: [1.0, 0.5], 4: [1.0, 0.75, 0.5, 0.25]}

SAMPLING_DEFAULTS_FILE = "sampling_defaults.json"


def consistency_sigmas(num_steps: int) -> list[float]:
    if num_steps not in CONSISTENCY_SIGMAS:
        raise ValueError(f"the consistency sampler supports 1, 2 or 4 steps, got {num_steps}")
    return list(CONSISTENCY_SIGMAS[num_steps])


def explicit_config(config) -> dict:
    """A scheduler config without diffusers' `_use_default_values`: `from_config` drops every key listed there, so
    an override of such a key (`stochastic_sampling` for a scheduler built in memory, or loaded from a file written
    before the option existed, like SD3-medium's) would silently fall back to the default."""
    return {k: v for k, v in dict(config or {}).items() if k != "_use_default_values"}


def consistency_scheduler_config(base_config: dict | None = None) -> dict:
    """Scheduler config whose default 4-step schedule is the student's [1, .75, .5, .25].

    With shift=1 the default `num_inference_steps=4` schedule is linspace(1, 0.001, 4); `shift_terminal=0.25`
    stretches it to end at 0.25, i.e. exactly the training timesteps, so `pipe(prompt, num_inference_steps=4)`
    on the stock pipeline is the paper's 4-step sampler.
    """
    config = explicit_config(base_config)
    config.update(shift=1.0, stochastic_sampling=True, shift_terminal=0.25, use_dynamic_shifting=False)
    return config


def scheduler_for_steps(scheduler: FlowMatchEulerDiscreteScheduler, num_steps: int):
    """A scheduler plus `sigmas` that run the consistency sampler for `num_steps` (1, 2 or 4).

    `shift_terminal` would re-stretch explicit sigmas (and divides by zero for one step), so it is dropped here.
    """
    config = explicit_config(scheduler.config)
    config.update(shift=1.0, stochastic_sampling=True, shift_terminal=None, use_dynamic_shifting=False)
    return FlowMatchEulerDiscreteScheduler.from_config(config), consistency_sigmas(num_steps)


def write_sampling_defaults(pipeline_dir: str | Path, **defaults) -> None:
    """Record the call arguments a pipeline folder is meant to be sampled with (steps, guidance, sizes...).

    diffusers cannot store call defaults in a pipeline folder, so they live beside model_index.json and the
    benchmark registry reads them for local folders.
    """
    path = Path(pipeline_dir) / SAMPLING_DEFAULTS_FILE
    path.write_text(json.dumps(defaults, indent=2, sort_keys=True) + "\n")


def read_sampling_defaults(pipeline_dir: str | Path) -> dict:
    path = Path(pipeline_dir) / SAMPLING_DEFAULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


@torch.no_grad()
def consistency_trajectory(transformer, noise, prompt_embeds, pooled, timesteps=STUDENT_TIMESTEPS,
                           image_latents=None, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The consistency sampler in latent space, without the pipeline: (states, x0s), each [steps, batch, ...].

        x_{t_0} = noise;  x0_k = D(x_{t_k}, t_k);  x_{t_k+1} = renoise(x0_k, eps_k, t_{k+1}),  eps_k ~ N(0, I)

    states[k] is what the model sees at t_k when sampling, x0s[k] what it predicts there (x0s[-1] is the sample)."""
    states, x0s = [], []
    x_t = noise
    for k, t in enumerate(timesteps):
        t = torch.full((len(x_t),), float(t), dtype=x_t.dtype, device=x_t.device)
        x0 = denoise(x_t, t, predict_velocity(transformer, x_t, t, prompt_embeds, pooled, image_latents))
        states.append(x_t)
        x0s.append(x0)
        if k + 1 < len(timesteps):
            eps = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
            x_t = renoise(x0, eps, torch.full_like(t, float(timesteps[k + 1])))
    return torch.stack(states), torch.stack(x0s)


@torch.no_grad()
def consistency_sample(
    pipe, prompt, num_steps: int = 4, generator=None, **call_kwargs
):
    """Sample a LADD student with the consistency sampler through the stock pipeline (guidance off)."""
    original = pipe.scheduler
    pipe.scheduler, sigmas = scheduler_for_steps(original, num_steps)
    try:
        return pipe(prompt, sigmas=sigmas, guidance_scale=0.0, generator=generator, **call_kwargs)
    finally:
        pipe.scheduler = original
