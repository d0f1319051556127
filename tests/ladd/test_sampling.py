"""The consistency sampler through diffusers' own scheduler and the stock SD3 pipeline."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ladd.flow import denoise, renoise
from ladd.sampling import (
    consistency_sample,
    consistency_scheduler_config,
    consistency_sigmas,
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


def test_sampling_defaults_round_trip(tmp_path):
    assert read_sampling_defaults(tmp_path) == {}
    write_sampling_defaults(tmp_path, num_inference_steps=4, guidance_scale=0.0)
    assert read_sampling_defaults(tmp_path) == {"guidance_scale": 0.0, "num_inference_steps": 4}
