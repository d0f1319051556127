"""The LADD discriminator: independent 2D-convolution heads on the teacher's per-block token grids.

Each head follows the projected-GAN heads of StyleGAN-T / ADD, with 2D instead of 1D convolutions (LADD Sec. 3:
on a 2D grid the head sees the same neighbourhoods for every aspect ratio). A head maps a feature grid to one
logit per location; conditioning is a projection (Miyato & Koyama): the logit is the inner product of the head's
features with an embedding of the noise level t-hat and the pooled text embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ladd.flow import to_model_timestep


def _conv(in_channels: int, out_channels: int, kernel_size: int, use_spectral_norm: bool) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return spectral_norm(conv) if use_spectral_norm else conv


class ConditionEmbedding(nn.Module):
    """c = MLP(sinusoid(t-hat * 1000)) + Linear(pooled text): what every head is conditioned on."""

    def __init__(self, pooled_dim: int, cond_dim: int):
        super().__init__()
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, cond_dim)
        self.text_embed = nn.Linear(pooled_dim, cond_dim)

    def forward(self, t_hat: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        time = self.time_embed(self.time_proj(to_model_timestep(t_hat)).to(pooled.dtype))
        return F.silu(time + self.text_embed(pooled))


class DiscriminatorHead(nn.Module):
    """conv3x3 -> (residual conv3x3) -> 1x1 to `cmap_dim`, projected onto the condition: (B, 1, h, w) logits."""

    def __init__(self, channels: int, cond_dim: int, hidden: int, cmap_dim: int, use_spectral_norm: bool = True):
        super().__init__()
        self.stem = nn.Sequential(
            _conv(channels, hidden, 3, use_spectral_norm), nn.GroupNorm(8, hidden), nn.LeakyReLU(0.2)
        )
        self.block = nn.Sequential(
            _conv(hidden, hidden, 3, use_spectral_norm), nn.GroupNorm(8, hidden), nn.LeakyReLU(0.2)
        )
        self.to_cmap = _conv(hidden, cmap_dim, 1, use_spectral_norm)
        self.cond_to_cmap = nn.Linear(cond_dim, cmap_dim)
        self.cmap_dim = cmap_dim

    def forward(self, grid: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.stem(grid)
        h = h + self.block(h)
        projection = self.cond_to_cmap(cond)[:, :, None, None]
        return (self.to_cmap(h) * projection).sum(1, keepdim=True) / math.sqrt(self.cmap_dim)


class Discriminator(nn.Module):
    """One independent head per teacher block; returns one logit map per head."""

    def __init__(
        self,
        num_heads: int,
        channels: int,
        pooled_dim: int,
        cond_dim: int = 128,
        hidden: int = 128,
        cmap_dim: int = 64,
        use_spectral_norm: bool = True,
    ):
        super().__init__()
        self.condition = ConditionEmbedding(pooled_dim, cond_dim)
        self.heads = nn.ModuleList(
            DiscriminatorHead(channels, cond_dim, hidden, cmap_dim, use_spectral_norm) for _ in range(num_heads)
        )

    def forward(self, grids: list[torch.Tensor], t_hat: torch.Tensor, pooled: torch.Tensor) -> list[torch.Tensor]:
        if len(grids) != len(self.heads):
            raise ValueError(f"{len(grids)} feature grids for {len(self.heads)} heads")
        cond = self.condition(t_hat, pooled)
        return [head(grid, cond) for head, grid in zip(self.heads, grids)]


# --- adversarial losses (averaged over heads and locations) -------------------------------------------------


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


ADVERSARIAL_LOSSES = {
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "bce": (bce_discriminator_loss, bce_generator_loss),
}
FAKE_TERMS = {"hinge": hinge_fake_term, "bce": bce_fake_term}


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
