"""Training data for the zoo: a pool of rendered (image, prompt) pairs per aspect bucket, and bucketed batches.

Every batch comes from one bucket (multi-aspect training as in SDXL / SD3: images of one shape per batch);
buckets are drawn in proportion to their share of the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ladd.shapes.grammar import sample_scene, scene_to_prompt
from ladd.shapes.render import BUCKETS, render

BUCKET_SHARES = (0.5, 0.25, 0.25)  # square, landscape, portrait


@dataclass
class Bucket:
    size: tuple[int, int]  # (width, height)
    images: torch.Tensor  # uint8, N x 3 x H x W
    prompts: list[str]


def render_pool(
    num_images: int, seed: int, exclude: set[str] = frozenset(), shares=BUCKET_SHARES, progress: bool = True
) -> list[Bucket]:
    """Render `num_images` random scenes (never one whose prompt is in `exclude`) spread over the buckets."""
    rng = np.random.default_rng(seed)
    buckets = []
    counts = [int(round(num_images * s)) for s in shares]
    bar = tqdm(total=sum(counts), desc="rendering", disable=not progress)
    for (width, height), count in zip(BUCKETS, counts):
        images = np.empty((count, height, width, 3), dtype=np.uint8)
        prompts = []
        while len(prompts) < count:
            scene = sample_scene(rng)
            prompt = scene_to_prompt(scene)
            if prompt in exclude:
                continue
            images[len(prompts)] = np.asarray(render(scene, int(rng.integers(2**31)), width, height))
            prompts.append(prompt)
            bar.update()
        buckets.append(Bucket((width, height), torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), prompts))
    bar.close()
    return buckets


class BucketSampler:
    """Endless (bucket index, sample indices) batches, every batch from one bucket."""

    def __init__(self, bucket_sizes: list[int], batch_size: int, seed: int):
        self.sizes = bucket_sizes
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.weights = torch.tensor(bucket_sizes, dtype=torch.float)

    def __iter__(self):
        while True:
            bucket = int(torch.multinomial(self.weights, 1, generator=self.generator))
            n = self.sizes[bucket]
            yield bucket, torch.randint(n, (min(self.batch_size, n),), generator=self.generator)
