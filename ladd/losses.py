"""Training objectives that need a model call (the pure equations live in `ladd.flow`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ladd.conditioning import predict_velocity
from ladd.flow import add_noise, denoise, flow_matching_loss, sample_logit_normal


def diffusion_loss(
    transformer,
    x0: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    image_latents: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rectified-flow training loss at t ~ pi(t; m, s) (SD3): what the teacher was trained with."""
    t = sample_logit_normal(len(x0), logit_mean, logit_std, generator=generator, device=x0.device).to(x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    velocity = predict_velocity(transformer, add_noise(x0, noise, t), t, prompt_embeds, pooled, image_latents)
    return flow_matching_loss(velocity, x0, noise)


def distillation_loss(
    student_x0: torch.Tensor, noisy: torch.Tensor, t_hat: torch.Tensor, teacher_velocity: torch.Tensor
) -> torch.Tensor:
    """ADD's L_distill in latent space: the student's x0 against the teacher's denoising of its renoised sample.
    `teacher_velocity` is the teacher's conditional output on that sample (free: it already ran for the
    discriminator features) or, guided, `classifier_free_guidance` of it with one more unconditional forward."""
    target = denoise(noisy, t_hat, teacher_velocity).detach()
    return F.mse_loss(student_x0.float(), target.float())
