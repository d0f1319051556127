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


def paired_loss(student_x0: torch.Tensor, teacher_x0: torch.Tensor, at_full_noise: torch.Tensor) -> torch.Tensor:
    """The student's one-step prediction from the teacher's own starting noise against the sample the teacher drew
    from that noise (distilling the sampler's map, Luhman & Luhman 2021): mean squared error over the samples at
    t = 1, where the student's input is that noise. Zero when no sample is at t = 1."""
    if not bool(at_full_noise.any()):
        return student_x0.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) the same on every process
    return F.mse_loss(student_x0[at_full_noise].float(), teacher_x0[at_full_noise].float())
