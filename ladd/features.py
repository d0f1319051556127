"""Teacher features (LADD Sec. 3): the image-token sequence after each transformer block, as a 2D grid.

`SD3Transformer2DModel.forward` cannot return intermediate states, so forward hooks on `transformer_blocks` read
them. A `JointTransformerBlock` returns `(encoder_hidden_states, hidden_states)`; the image tokens are output[1]
(the last block has `context_pre_only=True`, so its output[0] is None).

With gradient checkpointing, diffusers recomputes each block during backward and the hooks fire a second time.
The hooks therefore only record while `capture()` is active, and they store one tensor per block (never
append), so a recompute can neither duplicate nor replace what the forward pass recorded.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def tokens_to_grid(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, h*w, C) row-major image tokens -> (B, C, h, w). The inverse of PatchEmbed's flatten(2).transpose(1, 2)."""
    batch, count, channels = tokens.shape
    if count != height * width:
        raise ValueError(f"{count} tokens do not form a {height}x{width} grid")
    return tokens.transpose(1, 2).reshape(batch, channels, height, width)


def token_grid_size(transformer: nn.Module, latent_height: int, latent_width: int) -> tuple[int, int]:
    patch = transformer.config.patch_size
    return latent_height // patch, latent_width // patch


class TeacherFeatures:
    """Forward hooks that collect the image tokens after the chosen blocks of an SD3-style transformer.

        features = TeacherFeatures(teacher, blocks=None)   # None: every block
        with features.capture():
            teacher(hidden_states=x, ...)
        grids = features.grids(latent_height, latent_width)  # list of (B, C, h, w), in block order
    """

    def __init__(self, transformer: nn.Module, blocks: list[int] | None = None):
        self.transformer = transformer
        count = len(transformer.transformer_blocks)
        self.blocks = list(range(count)) if blocks is None else sorted({b % count for b in blocks})
        self._capturing = False
        self._store: dict[int, torch.Tensor] = {}
        self._handles = [
            transformer.transformer_blocks[i].register_forward_hook(self._hook(i)) for i in self.blocks
        ]

    @property
    def channels(self) -> int:
        return self.transformer.config.num_attention_heads * self.transformer.config.attention_head_dim

    def _hook(self, index: int):
        def hook(module, args, output):
            if self._capturing:  # not during a checkpoint recompute in backward
                self._store[index] = output[1]

        return hook

    @contextmanager
    def capture(self):
        self._store = {}
        self._capturing = True
        try:
            yield self
        finally:
            self._capturing = False

    def grids(self, latent_height: int, latent_width: int) -> list[torch.Tensor]:
        missing = [i for i in self.blocks if i not in self._store]
        if missing:
            raise RuntimeError(f"no features captured for blocks {missing}; run the teacher inside capture()")
        h, w = token_grid_size(self.transformer, latent_height, latent_width)
        grids = [tokens_to_grid(self._store[i], h, w) for i in self.blocks]
        self._store = {}  # drop references so activations can be freed
        return grids

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
