import math

import pytest
import torch

from ladd.flow import (
    add_noise,
    classifier_free_guidance,
    denoise,
    flow_matching_loss,
    logit_normal_density,
    renoise,
    sample_logit_normal,
    to_model_timestep,
    velocity_target,
)


@pytest.fixture
def x0_noise():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, 6, 8, generator=g), torch.randn(5, 4, 6, 8, generator=g)


def test_noising_interpolates_data_and_noise(x0_noise):
    x0, eps = x0_noise
    assert torch.equal(add_noise(x0, eps, torch.tensor(0.0)), x0)
    assert torch.equal(add_noise(x0, eps, torch.tensor(1.0)), eps)
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    x_t = add_noise(x0, eps, t)
    for i in range(5):
        assert torch.allclose(x_t[i], (1 - t[i]) * x0[i] + t[i] * eps[i])


def test_denoiser_with_the_true_velocity_recovers_x0(x0_noise):
    x0, eps = x0_noise
    t = torch.tensor([0.1, 0.3, 0.5, 0.9, 1.0])
    x_t = add_noise(x0, eps, t)
    assert torch.allclose(denoise(x_t, t, velocity_target(x0, eps)), x0, atol=1e-6)


def test_velocity_is_the_time_derivative_of_the_path(x0_noise):
    x0, eps = x0_noise
    t, h = torch.tensor(0.4), 1e-3
    numeric = (add_noise(x0, eps, t + h) - add_noise(x0, eps, t - h)) / (2 * h)
    assert torch.allclose(numeric, velocity_target(x0, eps), atol=1e-3)


def test_renoise_is_noising_a_prediction(x0_noise):
    x0, eps = x0_noise
    assert torch.equal(renoise(x0, eps, torch.tensor(0.5)), 0.5 * x0 + 0.5 * eps)


def test_flow_matching_loss_is_zero_at_the_target(x0_noise):
    x0, eps = x0_noise
    assert flow_matching_loss(velocity_target(x0, eps), x0, eps) == 0
    assert flow_matching_loss(torch.zeros_like(x0), x0, eps) == pytest.approx(((eps - x0) ** 2).mean().item())


@pytest.mark.parametrize("m,s", [(0.0, 1.0), (1.0, 1.0), (-0.5, 0.6)])
def test_logit_normal_samples_have_the_right_logit_moments(m, s):
    t = sample_logit_normal(200_000, m, s, generator=torch.Generator().manual_seed(1))
    assert ((t > 0) & (t < 1)).all()
    logit = torch.log(t) - torch.log1p(-t)
    assert logit.mean().item() == pytest.approx(m, abs=0.01)
    assert logit.std().item() == pytest.approx(s, abs=0.01)


def test_logit_normal_density_integrates_to_one_and_matches_samples():
    grid = torch.linspace(1e-5, 1 - 1e-5, 200_001, dtype=torch.float64)
    density = logit_normal_density(grid, 1.0, 1.0)
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-4)
    samples = sample_logit_normal(200_000, 1.0, 1.0, generator=torch.Generator().manual_seed(2))
    # P(t > 0.5) = P(normal > -m/s) = Phi(1) for m = s = 1: biased towards high noise
    assert (samples > 0.5).float().mean().item() == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))), abs=0.005)


def test_model_timestep_scale():
    assert to_model_timestep(torch.tensor(0.25)).item() == 250


def test_classifier_free_guidance_extrapolates_from_the_unconditional_output(x0_noise):
    uncond, cond = x0_noise
    assert torch.equal(classifier_free_guidance(uncond, cond, 0.0), uncond)
    assert torch.allclose(classifier_free_guidance(uncond, cond, 1.0), cond, atol=1e-6)
    # w = 4: four parts conditional, minus three parts unconditional
    assert torch.allclose(classifier_free_guidance(uncond, cond, 4.0), 4 * cond - 3 * uncond, atol=1e-5)
