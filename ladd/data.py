"""LADD's training data on disk: the one reader and writer of `ladd.synth` shards.

A data folder holds `plan.json` (how it was made, written by `ladd.synth`) and shards `shard-00000.safetensors`,
each one aspect bucket: `latents` (normalised, the transformer's space), `prompt_embeds` and
`pooled_prompt_embeds` (computed exactly as the pipeline computes them), with the prompts and the size in the
shard's metadata. Shards are written under a temporary name and renamed, so a killed run never leaves a truncated
shard under its final name.

For training, `LatentBuckets` draws batches: the batch of iteration k on process p is a pure function of
(seed, k, p). So the data position is just the iteration number: resuming at iteration k sees exactly the batches an
uninterrupted run would have seen, and every process of a distributed run draws different samples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

PLAN_FILE = "plan.json"
CONDITION_KEYS = ("latents", "prompt_embeds", "pooled_prompt_embeds", "image_latents")


def shard_path(folder: str | Path, index: int) -> Path:
    return Path(folder) / f"shard-{index:05d}.safetensors"


def shard_paths(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("shard-*.safetensors"))


def write_shard(path: Path, tensors: dict[str, torch.Tensor], prompts: list[str], width: int, height: int) -> None:
    tmp = path.with_suffix(".tmp")
    metadata = {"prompts": json.dumps(prompts), "width": str(width), "height": str(height)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_shard(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        prompts = json.loads(f.metadata()["prompts"])
    return tensors, prompts


def read_plan(folder: str | Path) -> dict:
    """The data folder's `plan.json` ({} if it has none)."""
    path = Path(folder) / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


class LatentBuckets:
    def __init__(self, folder: str | Path):
        folder = Path(folder)
        shards = shard_paths(folder)
        if not shards:
            raise FileNotFoundError(f"no shards in {folder}; make them with `python -m ladd.synth --out {folder}`")
        grouped: dict[tuple[int, ...], dict[str, list[torch.Tensor]]] = {}
        self.prompts: dict[tuple[int, ...], list[str]] = {}
        for path in shards:
            tensors, prompts = read_shard(path)
            key = tuple(tensors["latents"].shape[1:])
            group = grouped.setdefault(key, {})
            for name, tensor in tensors.items():
                group.setdefault(name, []).append(tensor)
            self.prompts.setdefault(key, []).extend(prompts)
        # a tensor that only some shards hold would misalign its bucket's rows: keep those every shard holds
        complete = {name for name in grouped[next(iter(grouped))]
                    if all(len(group.get(name, [])) == len(group["latents"]) for group in grouped.values())}
        self.buckets = [{name: torch.cat(parts) for name, parts in group.items() if name in complete}
                        for group in grouped.values()]
        self.keys = list(grouped)
        self.sizes = torch.tensor([len(b["latents"]) for b in self.buckets], dtype=torch.float)

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def batch(self, iteration: int, batch_size: int, seed: int, process_index: int = 0) -> dict[str, torch.Tensor]:
        """The batch for (iteration, process): a bucket drawn in proportion to its size, samples with replacement."""
        generator = torch.Generator().manual_seed(hash((seed, iteration, process_index)) % (2**63))
        bucket = int(torch.multinomial(self.sizes, 1, generator=generator))
        index = torch.randint(int(self.sizes[bucket]), (batch_size,), generator=generator)
        return {name: tensor[index] for name, tensor in self.buckets[bucket].items()}
