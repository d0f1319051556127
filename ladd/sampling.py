"""Sampling a LADD student: the flow consistency sampler, through diffusers' own scheduler and pipeline.

The consistency sampler (LADD Sec. 5, after Song et al.) alternates "predict x0" and "renoise to the next t":
    x0 = x_t - t * F(x_t, t);  x_next = (1 - t_next) * x0 + t_next * eps.
`FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)` performs exactly this step, so a student samples
through the stock `StableDiffusion3Pipeline`; only the sigmas must be the student's timesteps (`StudentTimesteps
.sigmas`: [1], [1, .5], [1, .75, .5, .25] for 1, 2, 4 steps). An exported student's scheduler config keeps explicit
sigmas as given (shift 1, no terminal stretch, no dynamic shifting), and its `sampling_defaults.json` records the
sigmas of every supported step count, so stock diffusers samples it exactly:

    pipe = StableDiffusion3Pipeline.from_pretrained(folder)
    table = json.load(open(f"{folder}/sampling_defaults.json"))["consistency_sigmas"]
    torch.manual_seed(0)   # the renoising noise comes from the global RNG (see below)
    image = pipe(prompt, sigmas=table["2"], guidance_scale=0.0, generator=torch.Generator().manual_seed(0))

No scheduler config can make `num_inference_steps` alone right for both 2 and 4 steps: every FlowMatchEuler
schedule of n >= 2 steps ends at the same last sigma whatever n is, while the paper's end at .5 and .25. The plain
call is right for 1 step.

The stock pipeline does not pass its `generator` to `scheduler.step`, so the renoising noise eps of a multi-step
sample is drawn from torch's global RNG: the same `generator` alone does not reproduce a 2- or 4-step sample.
Seed the global RNG too, or call `consistency_sample`, which does it from the generator (and restores the global
state afterwards).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ladd.conditioning import predict_velocity
from ladd.flow import denoise, renoise
from ladd.timesteps import StudentTimesteps

SAMPLING_DEFAULTS_FILE = "sampling_defaults.json"
SIGMA_TABLE = "consistency_sigmas"  # {"steps": [sigmas]} in sampling_defaults.json; not a pipeline argument


def explicit_config(config) -> dict:
    """A scheduler config without diffusers' `_use_default_values`: `from_config` drops every key listed there, so
    an override of such a key (`stochastic_sampling` for a scheduler built in memory, or loaded from a file written
    before the option existed, like SD3-medium's) would silently fall back to the default."""
    return {k: v for k, v in dict(config or {}).items() if k != "_use_default_values"}


def consistency_scheduler_config(base_config: dict | None = None) -> dict:
    """A FlowMatchEulerDiscreteScheduler config that steps as the consistency sampler and keeps explicit sigmas as
    given: no shift, no terminal stretch (which also gives a NaN sigma for one step), no dynamic shifting, no
    Karras/exponential/beta respacing."""
    config = explicit_config(base_config)
    config.update(shift=1.0, stochastic_sampling=True, shift_terminal=None, use_dynamic_shifting=False,
                  use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False, invert_sigmas=False)
    return config


def consistency_scheduler(base_config: dict | None = None) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler.from_config(consistency_scheduler_config(base_config))


def student_sampling_defaults(teacher_defaults: dict, timesteps: StudentTimesteps) -> dict:
    """A student's call defaults: the consistency sampler over all its timesteps, no guidance (text or image), the
    teacher's text length and image size; plus the sigma table of every step count it supports."""
    sizes = {k: teacher_defaults[k] for k in ("max_sequence_length", "height", "width") if k in teacher_defaults}
    if "image_guidance_scale" in teacher_defaults:  # an edit model's image guidance is off too
        sizes["image_guidance_scale"] = 0.0
    steps = len(timesteps.timesteps)
    return {**sizes, "num_inference_steps": steps, "sigmas": timesteps.sigmas(steps), "guidance_scale": 0.0,
            SIGMA_TABLE: {str(k): sigmas for k, sigmas in timesteps.sigma_table().items()}}


def write_sampling_defaults(pipeline_dir: str | Path, **defaults) -> None:
    """Record the call arguments a pipeline folder is meant to be sampled with (steps, guidance, sizes...).

    diffusers cannot store call defaults in a pipeline folder, so they live beside model_index.json and the
    benchmark registry reads them for local folders.
    """
    path = Path(pipeline_dir) / SAMPLING_DEFAULTS_FILE
    path.write_text(json.dumps(defaults, indent=2, sort_keys=True) + "\n")


def _read(pipeline_dir: str | Path) -> dict:
    path = Path(pipeline_dir) / SAMPLING_DEFAULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_sampling_defaults(pipeline_dir: str | Path) -> dict:
    """The pipeline call arguments recorded for a folder ({} if none)."""
    return {k: v for k, v in _read(pipeline_dir).items() if k != SIGMA_TABLE}


def read_student_timesteps(pipeline_dir: str | Path) -> StudentTimesteps | None:
    """The timesteps of a student folder (from its sigma table), or None for a folder that is not a student."""
    table = _read(pipeline_dir).get(SIGMA_TABLE)
    return StudentTimesteps.for_sampling(max(table.values(), key=len)) if table else None


@torch.no_grad()
def consistency_trajectory(transformer, noise, prompt_embeds, pooled, timesteps=StudentTimesteps().timesteps,
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


def renoise_seed(generator) -> int | None:
    """A seed for the global RNG, fixed by the generator(s) the caller passed (None: leave the RNG alone)."""
    generators = generator if isinstance(generator, (list, tuple)) else [generator] if generator is not None else []
    if not generators:
        return None
    return hash(tuple(int(g.initial_seed()) for g in generators)) % (2**63)


@torch.no_grad()
def consistency_sample(pipe, prompt, num_steps: int = 4, timesteps: StudentTimesteps | None = None, generator=None,
                       **call_kwargs):
    """Sample a student with the consistency sampler through its stock pipeline (guidance off).

    The sigmas are `timesteps.sigmas(num_steps)` (the paper's timesteps unless the student was trained on others:
    `read_student_timesteps(folder)`). With a `generator`, the global RNG the scheduler renoises from is seeded from
    it for the call and restored afterwards, so the same generator gives the same sample at any number of steps."""
    sigmas = (timesteps or StudentTimesteps()).sigmas(num_steps)
    original = pipe.scheduler
    pipe.scheduler = consistency_scheduler(original.config)
    seed = renoise_seed(generator)
    devices = [pipe.device] if pipe.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return pipe(prompt, sigmas=sigmas, guidance_scale=0.0, generator=generator, **call_kwargs)
    finally:
        pipe.scheduler = original
