"""Stable seeds: the same inputs give the same seed in every process, on every machine, in every run.

Python's `hash()` is salted per process, so seeds are derived from SHA-256 instead.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 31  # fits torch.Generator, numpy and 32-bit consumers alike


def stable_seed(*parts) -> int:
    """An integer in [0, 2**31) determined only by the string forms of `parts`."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % (1 << SEED_BITS)


def sample_seed(base_seed: int, suite: str, prompt_id: str, sample_index: int) -> int:
    """The seed of one (prompt, sample): independent of the model, the batch size, `--limit` and sharding.

    Every model benchmarked with the same `--seed` therefore starts from the same initial noise for each image
    (when their latent shapes agree), and the shapes suite's ground truth is rendered with the same seed.
    """
    return stable_seed("sample", base_seed, suite, prompt_id, sample_index)
