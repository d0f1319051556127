"""LADD's losses, each one named function with the paper's quantities (the pure flow equations are `ladd.flow`).

    generator step      L_G = L_adv(D(teacher(fake)))  [+ weight · L_distill]
    discriminator step  L_D = L_adv(D(teacher(real)), D(teacher(fake)))  [+ weight · L_mismatch]  [+ weight · R1]

L_adv is the hinge loss (the paper's, after ADD / StyleGAN-T) or the non-saturating BCE loss; adversarial terms
average over heads and locations. The bracketed terms are opt-in, each with its weight in `LaddConfig`.
`diffusion_loss` is the teacher's own training objective (rectified flow, SD3), used to build teachers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ladd.conditioning import predict_velocity
from ladd.flow import add_noise, denoise, flow_matching_loss, sample_logit_normal

# --- adversarial losses ---------------------------------------------------------------------------------------


def hinge_fake_term(fake: torch.Tensor) -> torch.Tensor:
    """max(0, 1 + D(x)) per location: the hinge penalty on a logit map that should read "fake"."""
    return F.relu(1 + fake)


def hinge_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """L_D = E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))]."""
    losses = [F.relu(1 - r).mean() + hinge_fake_term(f).mean() for r, f in zip(real, fake)]
    return torch.stack(losses).mean()


def hinge_generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """L_G = -E[D(fake)]."""
    return torch.stack([-f.mean() for f in fake]).mean()


def bce_fake_term(fake: torch.Tensor) -> torch.Tensor:
    """softplus(D(x)) per location: the non-saturating penalty on a logit map that should read "fake"."""
    return F.softplus(fake)


def bce_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Non-saturating GAN loss for D: softplus(-D(real)) + softplus(D(fake))."""
    return torch.stack([F.softplus(-r).mean() + bce_fake_term(f).mean() for r, f in zip(real, fake)]).mean()


def bce_generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Non-saturating GAN loss for G: softplus(-D(fake))."""
    return torch.stack([F.softplus(-f).mean() for f in fake]).mean()


# name -> (discriminator loss, generator loss, the per-location "fake" penalty)
ADVERSARIAL_LOSSES = {
    "hinge": (hinge_discriminator_loss, hinge_generator_loss, hinge_fake_term),
    "bce": (bce_discriminator_loss, bce_generator_loss, bce_fake_term),
}


# --- opt-in terms ---------------------------------------------------------------------------------------------


def distillation_loss(
    student_x0: torch.Tensor, noisy: torch.Tensor, t_hat: torch.Tensor, teacher_velocity: torch.Tensor
) -> torch.Tensor:
    """ADD's L_distill in latent space: the student's x0 against the teacher's denoising of its renoised sample.
    `teacher_velocity` is the teacher's conditional output on that sample (free: it already ran for the
    discriminator features) or, guided, `classifier_free_guidance` of it with one more unconditional forward."""
    target = denoise(noisy, t_hat, teacher_velocity).detach()
    return F.mse_loss(student_x0.float(), target.float())


def mismatch_loss(mismatch: list[torch.Tensor], keep: torch.Tensor, fake_term) -> torch.Tensor:
    """The matching-aware term (GAN-INT-CLS, Reed et al. 2016; GigaGAN): real latents judged under another
    sample's text must read "fake", so the heads learn whether an image fits its prompt, not only whether it looks
    real. `keep` (B,) drops pairs whose borrowed text is the sample's own (a prompt drawn twice in a batch)."""
    if not keep.any():
        return torch.zeros((), device=keep.device)
    return torch.stack([fake_term(m[keep]).mean() for m in mismatch]).mean()


def r1_penalty(real_logits: list[torch.Tensor], real_grids: list[torch.Tensor]) -> torch.Tensor:
    """R1 = E ||grad_x D(x)||^2 on real features. The grids must have had `requires_grad_()` set before the
    heads ran (they come from the frozen teacher under no_grad, so nothing else would track them)."""
    outputs = torch.stack([logits.sum() for logits in real_logits]).sum()
    grads = torch.autograd.grad(outputs, real_grids, create_graph=True)
    return torch.stack([g.pow(2).flatten(1).sum(1).mean() for g in grads]).mean()


# --- the teacher's objective ----------------------------------------------------------------------------------


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
