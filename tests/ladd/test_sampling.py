"""The consistency sampler through diffusers' own scheduler and the stock SD3 pipeline."""

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ladd.conditioning import encode_prompts
from ladd.flow import denoise, renoise
from ladd.sampling import (
    consistency_sample,
    consistency_scheduler_config,
    consistency_sigmas,
    consistency_trajectory,
    read_sampling_defaults,
    scheduler_for_steps,
    write_sampling_defaults,
)
from ladd.shapes.zoo import random_pipeline


@pytest.mark.parametrize("steps,expected", [(1, [1.0]), (2, [1.0, 0.5]), (4, [1.0, 0.75, 0.5, 0.25])])
def test_explicit_sigmas_stay_as_given(steps, expected):
    scheduler, sigmas = scheduler_for_steps(FlowMatchEulerDiscreteScheduler(shift=3.0), steps)
    scheduler.set_timesteps(sigmas=sigmas)
    assert scheduler.sigmas.tolist() == pytest.approx(expected + [0.0])
    assert scheduler.timesteps.tolist() == pytest.approx([1000 * s for s in expected])


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
        assert scheduler_for_steps(base, 2)[0].config.stochastic_sampling
        student = FlowMatchEulerDiscreteScheduler.from_config(consistency_scheduler_config(base.config))
        assert student.config.stochastic_sampling and student.config.shift == 1.0
        student.set_timesteps(4)
        assert student.sigmas.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_sd3_shift_would_remap_the_student_sigmas():
    """Why students use shift=1: SD3's shift=3 turns [1, .75, .5, .25] into [1, .9, .75, .5]."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    assert scheduler.sigmas[:4].tolist() == pytest.approx([1.0, 0.9, 0.75, 0.5])


def test_default_4_step_schedule_is_the_training_timesteps():
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(consistency_scheduler_config())
    scheduler.set_timesteps(4)
    assert scheduler.sigmas.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_stochastic_step_is_predict_x0_then_renoise():
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(consistency_scheduler_config())
    scheduler.set_timesteps(4)
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
    with pytest.raises(ValueError):
        consistency_sigmas(3)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_trajectory_is_the_stock_pipelines_sampler(steps):
    """The same noise in, the same latents out as `consistency_sample`: the trajectory's states are what a student
    sees when it samples. (The pipeline draws its initial latents from `generator`, the scheduler's renoising noise
    from the global RNG.)"""
    pipe = random_pipeline()
    prompt_embeds, pooled = encode_prompts(pipe, ["a red circle", "two blue squares"], max_sequence_length=0)
    size = 32 // pipe.vae_scale_factor
    noise = torch.randn(2, pipe.transformer.config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    states, x0s = consistency_trajectory(pipe.transformer, noise, prompt_embeds, pooled,
                                         timesteps=consistency_sigmas(steps), generator=torch.Generator().manual_seed(1))
    assert states.shape == x0s.shape == (steps, *noise.shape) and torch.equal(states[0], noise)
    torch.manual_seed(1)
    latents = consistency_sample(pipe, None, num_steps=steps, prompt_embeds=prompt_embeds,
                                 pooled_prompt_embeds=pooled, height=32, width=32, output_type="latent",
                                 generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(x0s[-1], latents)


def test_sampling_defaults_round_trip(tmp_path):
    assert read_sampling_defaults(tmp_path) == {}
    write_sampling_defaults(tmp_path, num_inference_steps=4, guidance_scale=0.0)
    assert read_sampling_defaults(tmp_path) == {"guidance_scale": 0.0, "num_inference_steps": 4}
