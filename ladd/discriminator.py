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
