"""Training data for LADD: `python -m ladd.synth --model TEACHER --out DIR [--num N] [--prompts FILE]`.

LADD trains the student on synthetic latents made by the teacher (or any data-generator model) at a constant
CFG scale (paper Sec. 3, "Leveraging synthetic data"): no decoding, no re-encoding, uniformly well-aligned data.
`--source render` / `--source images` instead VAE-encodes real images (the paper's real-data ablation). Real latents
are posterior samples by default (`--posterior sample`), as the teacher's training data were: a generator's latents
carry the posterior's spread, and posterior means lack it, which the discriminator would tell apart at a glance
(`docs/ladd-results.md`, "Real data").

Output: resumable shards `shard-00000.safetensors`, each one aspect bucket, holding `latents` (normalised, the
transformer's space), `prompt_embeds` and `pooled_prompt_embeds` (computed exactly as the pipeline computes them),
with the prompts in the shard's metadata; teacher-made data also holds `noise`, the Gaussian noise each latent was
sampled from (the teacher's sampler is deterministic, so (noise, latent) is a pair of its sampling map, for
`ladd.train`'s optional paired loss; `--add-noise` adds it to data made before it was saved). `plan.json` fixes
the shard plan: a rerun skips finished shards, and a rerun with different settings is refused instead of mixing
data. Shards are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors import safe_open
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import save_file
from tqdm import tqdm

from ladd.conditioning import encode_images, encode_prompts
from ladd.pipelines import load_pipeline, pipeline_folder
from ladd.sampling import read_sampling_defaults
from ladd.shapes.data import BUCKET_SHARES, to_model_range
from ladd.shapes.grammar import sample_scene, scene_to_prompt
from ladd.shapes.heldout import heldout_prompts
from ladd.shapes.render import BUCKETS, render_prompt


def shard_plan(num: int, shard_size: int, buckets, shares) -> list[dict]:
    """Shard i: its bucket and its slice of the prompt stream. Buckets follow `shares` exactly in the long run."""
    num_shards = -(-num // shard_size)
    targets = np.array(shares) / sum(shares)
    plan, counts = [], np.zeros(len(buckets))
    for i in range(num_shards):
        bucket = int(np.argmax(targets * (i + 1) - counts))  # the bucket furthest behind its share
        counts[bucket] += 1
        size = min(shard_size, num - i * shard_size)
        plan.append({"index": i, "width": buckets[bucket][0], "height": buckets[bucket][1], "start": i * shard_size,
                     "size": size})
    return plan


def shapes_prompts(num: int, seed: int) -> list[str]:
    """Random shapes-world prompts from the full grammar, never a held-out one."""
    rng = np.random.default_rng(seed)
    exclude = heldout_prompts()
    prompts = []
    while len(prompts) < num:
        prompt = scene_to_prompt(sample_scene(rng))
        if prompt not in exclude:
            prompts.append(prompt)
    return prompts


def read_prompt_file(path: Path) -> list[str]:
    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False)["prompt"].tolist()
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def shard_path(out: Path, index: int) -> Path:
    return out / f"shard-{index:05d}.safetensors"


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # a killed run never leaves a truncated shard under the final name


def latent_seeds(seed: int, start: int, stop: int) -> list[int]:
    """The seeds of latents start..stop-1 of a data folder made with --seed `seed` (latent i's prompt: prompts[i])."""
    return [seed * 1_000_003 + i for i in range(start, stop)]


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """The Gaussian noise each latent starts from (flow matching starts at t = 1 from the noise itself): diffusers'
    `randn_tensor` with one generator per latent, as the pipeline draws it from a list of generators."""
    return randn_tensor((len(seeds), *shape), generator=[torch.Generator().manual_seed(int(s)) for s in seeds])


@torch.no_grad()
def generate_latents(pipe, prompts, width, height, noise, steps, guidance, max_sequence_length) -> torch.Tensor:
    """The pipeline's latents from the given starting noise (`initial_noise`), so the data can store the noise."""
    return pipe(
        prompt=prompts,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=noise,
        max_sequence_length=max_sequence_length,
        output_type="latent",
    ).images


def load_images(paths: list[str], width: int, height: int) -> torch.Tensor:
    """Images -> [-1, 1] tensors at a bucket's size (resized, as aspect bucketing does after choosing a bucket)."""
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((width, height), Image.BICUBIC)) for p in paths]
    return to_model_range(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def render_images(prompts: list[str], seeds: list[int], width: int, height: int) -> torch.Tensor:
    """Shapes-world renderings of the prompts -> [-1, 1] tensors (the real-data source)."""
    arrays = [np.asarray(render_prompt(p, s, width, height)) for p, s in zip(prompts, seeds)]
    return to_model_range(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def run(args) -> int:
    out = Path(args.out)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    defaults = read_sampling_defaults(args.model)
    steps = args.steps or defaults.get("num_inference_steps", 50)
    guidance = args.guidance if args.guidance is not None else defaults.get("guidance_scale", 4.0)
    max_sequence_length = defaults.get("max_sequence_length", 256)

    images = None
    if args.source == "images":
        table = pd.read_csv(args.images_csv, keep_default_na=False)
        prompts, images = table["prompt"].tolist(), table["image"].tolist()
    elif args.prompts:
        prompts = read_prompt_file(Path(args.prompts))
    else:
        prompts = shapes_prompts(args.num, args.seed)
    if not prompts:
        raise ValueError("no prompts")
    num = args.num or len(prompts)

    plan = shard_plan(num, args.shard_size, BUCKETS, BUCKET_SHARES)
    settings = {"model": str(args.model), "source": args.source, "num": num, "shard_size": args.shard_size,
                "steps": steps, "guidance": guidance, "seed": args.seed, "prompts": args.prompts or "shapes",
                "max_sequence_length": max_sequence_length, "shards": plan}
    if args.source != "teacher":
        settings["posterior"] = args.posterior
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / "plan.json"
    if plan_file.exists():
        previous = json.loads(plan_file.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise ValueError(f"{out} holds data made with other settings ({', '.join(changed)}); use a new --out")
    else:
        plan_file.write_text(json.dumps(settings, indent=2))

    todo = [s for s in plan if not shard_path(out, s["index"]).exists()]
    bar = tqdm(total=sum(s["size"] for s in plan), initial=sum(s["size"] for s in plan) - sum(s["size"] for s in todo),
               desc=f"synth ({args.source})", unit="latent")
    for shard in todo:
        width, height = shard["width"], shard["height"]
        latents, embeds, pooled, noise, shard_prompts = [], [], [], [], []
        for start in range(shard["start"], shard["start"] + shard["size"], args.batch_size):
            stop = min(start + args.batch_size, shard["start"] + shard["size"])
            batch_prompts = [prompts[i % len(prompts)] for i in range(start, stop)]
            seeds = latent_seeds(args.seed, start, stop)
            if args.source == "teacher":
                shape = (pipe.transformer.config.in_channels, height // pipe.vae_scale_factor,
                         width // pipe.vae_scale_factor)  # as the pipeline's prepare_latents shapes it
                noise.append(initial_noise(seeds, shape))
                batch = generate_latents(pipe, batch_prompts, width, height, noise[-1], steps, guidance,
                                         max_sequence_length)
            else:
                pixels = (render_images(batch_prompts, seeds, width, height) if args.source == "render" else
                          load_images([images[i % len(images)] for i in range(start, stop)], width, height))
                batch = encode_images(pipe.vae, pixels, sample=args.posterior == "sample",
                                      generator=torch.Generator().manual_seed(seeds[0]))
            e, p = encode_prompts(pipe, batch_prompts, max_sequence_length)
            latents.append(batch.float())
            embeds.append(e.float())
            pooled.append(p.float())
            shard_prompts += batch_prompts
            bar.update(len(batch_prompts))
        tensors = {"latents": torch.cat(latents), "prompt_embeds": torch.cat(embeds),
                   "pooled_prompt_embeds": torch.cat(pooled)}
        if noise:
            tensors["noise"] = torch.cat(noise)
        write_shard(shard_path(out, shard["index"]), tensors,
                    {"prompts": json.dumps(shard_prompts), "width": str(width), "height": str(height)})
    bar.close()
    print(f"{len(plan)} shards, {num} latents in {out}")
    return 0


def add_teacher_noise(out: Path) -> int:
    """Add `noise` to the finished shards of teacher-made data that lack it, from the seeds in its plan."""
    plan = json.loads((out / "plan.json").read_text())
    if plan["source"] != "teacher":
        raise ValueError(f"{out} holds {plan['source']} latents: only teacher-made data has a sampling noise")
    added = 0
    for shard in tqdm(plan["shards"], desc="noise", unit="shard"):
        path = shard_path(out, shard["index"])
        if not path.exists():
            continue
        with safe_open(str(path), framework="pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        if "noise" not in tensors:
            seeds = latent_seeds(plan["seed"], shard["start"], shard["start"] + shard["size"])
            tensors["noise"] = initial_noise(seeds, tuple(tensors["latents"].shape[1:]))
            write_shard(path, tensors, metadata)
            added += 1
    print(f"noise added to {added} shards in {out}")
    return 0


def read_shard(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        prompts = json.loads(f.metadata()["prompts"])
    return tensors, prompts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="data-generator pipeline folder (usually the teacher)")
    parser.add_argument("--out", required=True, help="output folder for shards")
    parser.add_argument("--num", type=int, default=0, help="number of latents (default: one per prompt)")
    parser.add_argument("--prompts", help="prompt file (.txt one per line, or .csv with a 'prompt' column); "
                                          "default: random shapes-world prompts (held-out ones excluded)")
    parser.add_argument("--source", choices=["teacher", "render", "images"], default="teacher",
                        help="teacher: synthetic latents; render: VAE-encoded shapes renderings (real-data "
                             "ablation); images: VAE-encoded images listed in --images-csv")
    parser.add_argument("--images-csv", help="CSV with 'image' (path) and 'prompt' columns, for --source images")
    parser.add_argument("--posterior", choices=["sample", "mean"], default="sample",
                        help="real images: a seeded sample of the VAE posterior, as diffusion models train on "
                             "(default), or its mean")
    parser.add_argument("--steps", type=int, default=0, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="constant CFG scale (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--add-noise", action="store_true",
                        help="only add each latent's sampling noise to the teacher-made shards in --out that lack it")
    args = parser.parse_args(argv)
    if args.add_noise:
        if not (Path(args.out) / "plan.json").is_file():
            print(f"error: {args.out} has no plan.json: not a ladd.synth data folder", file=sys.stderr)
            return 2
        try:
            return add_teacher_noise(Path(args.out))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if not args.model:
        print("error: --model is required (the data-generator pipeline folder)", file=sys.stderr)
        return 2
    try:
        args.model = pipeline_folder(args.model)
    except ValueError as error:
        print(f"error: --model: {error}", file=sys.stderr)
        return 2
    if args.source == "images" and not args.images_csv:
        print("error: --source images needs --images-csv", file=sys.stderr)
        return 2
    if args.source != "images" and not args.prompts and args.num <= 0:
        print("error: give --num (how many shapes prompts) or --prompts FILE", file=sys.stderr)
        return 2
    if args.batch_size <= 0 or args.shard_size <= 0:
        print("error: --batch-size and --shard-size must be positive", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
