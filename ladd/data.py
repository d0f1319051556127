"""Reading `ladd.synth` shards for training: multi-aspect buckets, one bucket per batch.

The batch of iteration k on process p is a pure function of (seed, k, p). So the data position is just the
iteration number: resuming at iteration k sees exactly the batches an uninterrupted run would have seen, and every
process of a distributed run draws different samples.
"""

from __future__ import annotations

from pathlib import Path

import torch

from safetensors import safe_open

from ladd.synth import read_shard

CONDITION_KEYS = ("latents", "prompt_embeds", "pooled_prompt_embeds", "image_latents")


def shards_hold(folder: Path, name: str) -> bool:
    """Whether every shard in `folder` holds the tensor `name` (read from the headers, no data loaded)."""
    shards = sorted(Path(folder).glob("shard-*.safetensors"))
    return bool(shards) and all(name in safe_open(str(path), framework="pt").keys() for path in shards)


class LatentBuckets:
    def __init__(self, folder: str | Path):
        folder = Path(folder)
        shards = sorted(folder.glob("shard-*.safetensors"))
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
        # a tensor only some shards hold (`noise`, which older data lacks until `ladd.synth --add-noise`) would
        # misalign its bucket's rows: keep the tensors that every shard holds
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
