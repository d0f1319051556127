"""Rectified-flow equations (LADD Sec. 2.1, SD3), each one small named function.

    noising        x_t = (1 - t) * x0 + t * eps                       alpha_t = 1 - t, sigma_t = t
    denoiser       D(x_t, t) = x_t - t * F(x_t, t)                    F: the network's velocity output
    target         F* = eps - x0                                      (so D(x_t, t) = x0 when F = F*)
    renoising      x_t' = (1 - t') * D + t' * eps'                    the consistency sampler's step
    guidance       F_w = F(x_t, t, {}) + w * (F(x_t, t, c) - F(x_t, t, {}))  classifier-free guidance, scale w
    nested         F = F(∅, ∅) + s_I (F(I, ∅) - F(∅, ∅)) + s_T (F(I, T) - F(I, ∅))  image and text guidance (editing)
    logit-normal   t = sigmoid(m + s * n), n ~ N(0, 1)                pi(t; m, s), SD3 / LADD Sec. 4.1

t lives in [0, 1]; SD3's transformer takes timesteps t * 1000.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample t as a tensor broadcastable against a batch of latents."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) * x0 + t * eps."""
    t = _expand(t, x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """F* = eps - x0, the velocity the network learns (d x_t / d t)."""
    return noise - x0


def denoise(x_t: torch.Tensor, t: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """D(x_t, t) = x_t - t * F(x_t, t): the network's estimate of x0."""
    return x_t - _expand(t, x_t) * velocity


def renoise(x0: torch.Tensor, noise: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """The consistency sampler's step: put a predicted x0 back on the path at the next (lower) t."""
    return add_noise(x0, noise, t_next)


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """F_w = F_uncond + w * (F_cond - F_uncond), as `StableDiffusion3Pipeline` combines its two branches."""
    return uncond + scale * (cond - uncond)


def nested_guidance(uncond: torch.Tensor, image_cond: torch.Tensor, full_cond: torch.Tensor, image_scale: float,
                    text_scale: float) -> torch.Tensor:
    """InstructPix2Pix's guidance over an input image I and an instruction T: the unconditional output F(∅, ∅), the
    image-only F(I, ∅) and the full F(I, T), weighted by the image scale s_I and the text scale s_T."""
    return uncond + image_scale * (image_cond - uncond) + text_scale * (full_cond - image_cond)


def sample_logit_normal(
    n: int, m: float = 0.0, s: float = 1.0, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """t ~ pi(t; m, s): a normal in logit space, squashed to (0, 1). m > 0 biases towards high noise."""
    normal = torch.randn(n, generator=generator, device=device)
    return torch.sigmoid(m + s * normal)


def logit_normal_density(t: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    """pi(t; m, s) = 1 / (s sqrt(2 pi)) * 1 / (t (1 - t)) * exp(-(logit(t) - m)^2 / (2 s^2))."""
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-((logit - m) ** 2) / (2 * s**2)) / (s * (2 * torch.pi) ** 0.5 * t * (1 - t))


def to_model_timestep(t: torch.Tensor) -> torch.Tensor:
    """SD3's transformers are conditioned on t * 1000."""
    return t * NUM_TRAIN_TIMESTEPS


def flow_matching_loss(velocity: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Eq. (1) with the rectified-flow weighting: mean squared error of the velocity."""
    return torch.mean((velocity.float() - velocity_target(x0, noise).float()) ** 2)
