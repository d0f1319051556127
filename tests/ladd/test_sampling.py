"""The consistency sampler through diffusers' own scheduler and the stock SD3 pipeline."""

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

from ladd.conditioning import encode_prompts
from ladd.flow import denoise, renoise
from ladd.paths import MODELS_DIR
from ladd.sampling import (
    SIGMA_TABLE,
    consistency_sample,
    consistency_scheduler,
    consistency_trajectory,
    read_sampling_defaults,
    read_student_timesteps,
    student_sampling_defaults,
    write_sampling_defaults,
)
from ladd.shapes.zoo import random_pipeline
from ladd.timesteps import StudentTimesteps

PAPER_SIGMAS = {1: [1.0], 2: [1.0, 0.5], 4: [1.0, 0.75, 0.5, 0.25]}


@pytest.mark.parametrize("steps,expected", sorted(PAPER_SIGMAS.items()))
def test_explicit_sigmas_stay_as_given_even_from_an_sd3_scheduler(steps, expected):
    scheduler = consistency_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0, shift_terminal=0.25).config)
    scheduler.set_timesteps(sigmas=StudentTimesteps().sigmas(steps))
    assert scheduler.sigmas.tolist() == pytest.approx(expected + [0.0])
    assert scheduler.timesteps.tolist() == pytest.approx([1000 * s for s in expected])


def test_a_plain_one_step_call_is_the_paper_sampler():
    """No terminal stretch: `set_timesteps(1)` is [1] (with shift_terminal it is a NaN sigma)."""
    scheduler = consistency_scheduler()
    scheduler.set_timesteps(1)
    assert scheduler.sigmas.tolist() == [1.0, 0.0]


def sd3_medium_scheduler(tmp_path) -> FlowMatchEulerDiscreteScheduler:
    """A scheduler loaded from SD3-medium's scheduler_config.json as published (diffusers 0.29: no
    `stochastic_sampling`, `shift_terminal` or `use_dynamic_shifting` keys, so they are in `_use_default_values`)."""
    (tmp_path / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
         "num_train_timesteps": 1000, "shift": 3.0}))
    return FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path)


def test_consistency_schedulers_are_stochastic_for_configs_written_before_the_option(tmp_path):
    """`from_config` drops keys listed in `_use_default_values`: the overrides must survive that, or the student
    would sample with deterministic Euler steps."""
    teacher = sd3_medium_scheduler(tmp_path)
    assert "stochastic_sampling" in teacher.config["_use_default_values"]
    for base in (teacher, FlowMatchEulerDiscreteScheduler(shift=3.0)):  # loaded, and built in memory
        student = consistency_scheduler(base.config)
        assert student.config.stochastic_sampling and student.config.shift == 1.0
        student.set_timesteps(sigmas=[1.0, 0.5])
        assert student.sigmas.tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_sd3_shift_would_remap_the_student_sigmas():
    """Why students use shift=1: SD3's shift=3 turns [1, .75, .5, .25] into [1, .9, .75, .5]."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    assert scheduler.sigmas[:4].tolist() == pytest.approx([1.0, 0.9, 0.75, 0.5])


def test_stochastic_step_is_predict_x0_then_renoise():
    scheduler = consistency_scheduler()
    scheduler.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    torch.manual_seed(5)
    stepped = scheduler.step(v, scheduler.timesteps[1], x, return_dict=False)[0]  # t = 0.75 -> 0.5
    torch.manual_seed(5)
    noise = torch.randn(2, 4, 8, 8)
    expected = renoise(denoise(x, torch.tensor(0.75), v), noise, torch.tensor(0.5))
    assert torch.allclose(stepped, expected, atol=1e-6)


def test_consistency_sample_through_the_stock_pipeline_restores_the_scheduler():
    pipe = random_pipeline()
    original = pipe.scheduler
    image = consistency_sample(pipe, "a red circle", num_steps=2, height=32, width=32, max_sequence_length=0,
                               generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32) and pipe.scheduler is original
    with pytest.raises(ValueError, match="1, 2, 4 steps"):
        consistency_sample(pipe, "a red circle", num_steps=3)


def latents(pipe, steps, **kwargs):
    return pipe("a red circle", height=32, width=32, max_sequence_length=0, output_type="latent",
                guidance_scale=0.0, **kwargs).images


def test_the_stock_pipeline_renoises_from_the_global_rng_and_consistency_sample_seeds_it():
    """`StableDiffusion3Pipeline` does not pass `generator` to `scheduler.step`: with the same generator, a
    multi-step sample still changes with the global RNG. `consistency_sample` seeds the global RNG from the
    generator (and gives the caller's RNG state back)."""
    pipe = random_pipeline()
    pipe.scheduler = consistency_scheduler(pipe.scheduler.config)
    same = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    for steps, differs in ((1, False), (4, True)):
        torch.manual_seed(0)
        a = latents(pipe, steps, sigmas=StudentTimesteps().sigmas(steps), generator=same())
        torch.manual_seed(1)
        b = latents(pipe, steps, sigmas=StudentTimesteps().sigmas(steps), generator=same())
        assert (not torch.equal(a, b)) == differs
    torch.manual_seed(2)
    state = torch.get_rng_state()
    a = consistency_sample(pipe, "a red circle", 4, generator=same(), height=32, width=32, max_sequence_length=0,
                           output_type="latent").images
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is left as it was
    torch.manual_seed(3)
    b = consistency_sample(pipe, "a red circle", 4, generator=same(), height=32, width=32, max_sequence_length=0,
                           output_type="latent").images
    assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_trajectory_is_the_stock_pipelines_sampler(steps):
    """The same noise in, the same latents out as the stock pipeline with the student's sigmas: the trajectory's
    states are what a student sees when it samples. (The pipeline draws its initial latents from `generator`, the
    scheduler's renoising noise from the global RNG.)"""
    pipe = random_pipeline()
    pipe.scheduler = consistency_scheduler(pipe.scheduler.config)
    prompt_embeds, pooled = encode_prompts(pipe, ["a red circle", "two blue squares"], max_sequence_length=0)
    size = 32 // pipe.vae_scale_factor
    noise = torch.randn(2, pipe.transformer.config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    sigmas = StudentTimesteps().sigmas(steps)
    states, x0s = consistency_trajectory(pipe.transformer, noise, prompt_embeds, pooled, timesteps=sigmas,
                                         generator=torch.Generator().manual_seed(1))
    assert states.shape == x0s.shape == (steps, *noise.shape) and torch.equal(states[0], noise)
    torch.manual_seed(1)
    out = pipe(prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled, sigmas=sigmas, guidance_scale=0.0,
               height=32, width=32, output_type="latent", generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(x0s[-1], out)


def test_sampling_defaults_round_trip_with_the_sigma_table(tmp_path):
    assert read_sampling_defaults(tmp_path) == {} and read_student_timesteps(tmp_path) is None
    teacher = {"max_sequence_length": 16, "height": 64, "width": 64, "num_inference_steps": 50}
    write_sampling_defaults(tmp_path, **student_sampling_defaults(teacher, StudentTimesteps()))
    stored = json.loads((tmp_path / "sampling_defaults.json").read_text())
    assert stored[SIGMA_TABLE] == {str(k): v for k, v in PAPER_SIGMAS.items()}
    assert read_sampling_defaults(tmp_path) == {"max_sequence_length": 16, "height": 64, "width": 64,
                                                "num_inference_steps": 4, "sigmas": PAPER_SIGMAS[4],
                                                "guidance_scale": 0.0}  # call arguments only
    assert read_student_timesteps(tmp_path).timesteps == (1.0, 0.75, 0.5, 0.25)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_committed_student_samples_with_the_papers_sigmas_in_stock_diffusers(steps):
    """models/shapes-turbo, loaded as any diffusers model is, with the sigmas its folder records."""
    folder = MODELS_DIR / "shapes-turbo"
    pipe = StableDiffusion3Pipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    table = json.loads((folder / "sampling_defaults.json").read_text())[SIGMA_TABLE]
    image = pipe("a red circle", sigmas=table[str(steps)], guidance_scale=0.0, max_sequence_length=16,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert pipe.scheduler.sigmas.tolist() == pytest.approx(PAPER_SIGMAS[steps] + [0.0])
    assert pipe.scheduler.config.stochastic_sampling and image.size == (64, 64)
    if steps == 1:  # the plain call needs no sigmas for one step
        pipe("a red circle", num_inference_steps=1, guidance_scale=0.0, max_sequence_length=16)
        assert pipe.scheduler.sigmas.tolist() == [1.0, 0.0]
