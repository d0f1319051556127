"""Training data for LADD: `python -m ladd.synth --model TEACHER --prompts FILE --out DIR [--num N]`.

LADD trains the student on synthetic latents made by the teacher (or any data-generator model) at a constant
CFG scale (paper Sec. 3, "Leveraging synthetic data"): no decoding, no re-encoding, uniformly well-aligned data.
The prompts come from a prompt file (`ladd.prompts`): text, one prompt a line, or a CSV with a `prompt` column and,
for multi-aspect data, `width` and `height` columns (each prompt's aspect bucket). `--images FILE.csv` instead
VAE-encodes real images (columns `image`, `prompt`, optional `width`, `height`; paths relative to the CSV): the
paper's real-data ablation. Real latents are posterior samples by default (`--posterior sample`), as a diffusion
model's training data are; posterior means lack the posterior's spread, which a discriminator tells apart at once.

Image-to-image models (`ladd.edit_pipeline`, `ladd.inpaint_pipeline`) are conditioned on images too: the file names
them per row (paths relative to the file) — `image` (the source to edit, or the image to fill) and `mask` for the
teacher; for real data `image` is the real result and the condition is `source` (editing) or `mask` (inpainting).
Each shard then also holds `image_latents`, the condition exactly as the pipeline builds it (`prepare_condition`),
which training concatenates to the student's and the teacher's inputs.

Output: `ladd.data`'s shards, one aspect bucket each, and `plan.json`, which fixes the shard plan: a rerun skips
finished shards, and a rerun with other settings is refused instead of mixing data.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from tqdm import tqdm

from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.conditioning import encode_images, encode_prompts, to_model_range
from ladd.data import PLAN_FILE, shard_path, write_shard
from ladd.pipelines import load_pipeline, pipeline_class_of, pipeline_folder
from ladd.prompts import read_prompt_file
from ladd.sampling import read_sampling_defaults

PROG = "python -m ladd.synth"


def parse_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (width, height)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) <= 0 or int(height) <= 0:
        raise LaddError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 1024x1024, got {text!r}")
    return int(width), int(height)


def row_sizes(table: pd.DataFrame, default: tuple[int, int] | None, where: str) -> list[tuple[int, int]]:
    """Each row's (width, height): its own columns, else `default`."""
    if {"width", "height"} <= set(table.columns) and default is None:
        try:
            sizes = [(int(w), int(h)) for w, h in zip(table["width"], table["height"])]
        except ValueError:
            raise LaddError(f"{where}: width and height must be whole numbers of pixels") from None
        if any(w <= 0 or h <= 0 for w, h in sizes):
            raise LaddError(f"{where}: width and height must be positive")
        return sizes
    if default is None:
        raise LaddError(f"{where} has no width/height columns and the model records no size: pass --size WxH")
    return [default] * len(table)


def shard_plan(sizes: list[tuple[int, int]], shard_size: int) -> list[dict]:
    """Shards of at most `shard_size` latents, each of one size: the rows of every size, in order, cut in runs."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for row, size in enumerate(sizes):
        by_size.setdefault(size, []).append(row)
    plan = []
    for (width, height), rows in by_size.items():
        for start in range(0, len(rows), shard_size):
            plan.append({"index": len(plan), "width": width, "height": height, "rows": rows[start:start + shard_size]})
    return plan


def latent_seed(seed: int, row: int) -> int:
    """The seed of latent `row` of a data folder made with --seed `seed`."""
    return seed * 1_000_003 + row


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Each latent's starting noise, from its own generator (diffusers' `randn_tensor` with a list of generators,
    as the pipeline draws it): a latent does not depend on the batch it was made in."""
    return randn_tensor((len(seeds), *shape), generator=[torch.Generator().manual_seed(int(s)) for s in seeds])


@torch.no_grad()
def generate_latents(pipe, prompts, width, height, noise, steps, guidance, max_sequence_length,
                     **call_kwargs) -> torch.Tensor:
    """The pipeline's latents (not decoded) from the given starting noise (and, for an image-to-image model, its
    condition images)."""
    return pipe(prompt=prompts, width=width, height=height, num_inference_steps=steps, guidance_scale=guidance,
                latents=noise, max_sequence_length=max_sequence_length, output_type="latent", **call_kwargs).images


def load_images(paths: list[Path], width: int, height: int) -> torch.Tensor:
    """Images -> [-1, 1] tensors at their bucket's size (resized, as aspect bucketing does after choosing a bucket)."""
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC)))
        except OSError as error:
            raise LaddError(f"cannot read image {path} ({error})") from None
    return to_model_range(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def condition_columns(pipeline_class, real: bool) -> dict[str, str]:
    """{pipeline argument: file column} of the images an image-to-image model is conditioned on ({} for text-to-image).
    For real data `image` is the result itself, so an edit's source comes from the `source` column."""
    inputs = getattr(pipeline_class, "condition_inputs", ())
    columns = {"image": "image", "mask_image": "mask"}
    if real and inputs == ("image",):
        columns["image"] = "source"
    return {argument: columns[argument] for argument in inputs}


def read_sources(args, conditions: dict[str, str]) -> tuple[pd.DataFrame, Path]:
    """The prompt (or image) table and the file it came from, its image paths resolved against its folder."""
    source = Path(args.images or args.prompts)
    table = read_prompt_file(source)
    paths = ({"image"} if args.images else set()) | set(conditions.values())
    missing = sorted(paths - set(table.columns))
    if missing:
        raise LaddError(f"{source} has no {', '.join(repr(c) for c in missing)} column "
                        f"(image paths, relative to the file's folder)")
    for column in paths:
        table[column] = [str(Path(p) if Path(p).is_absolute() else source.parent / p) for p in table[column]]
    return table, source


def open_images(paths: list[str], width: int, height: int, mode: str = "RGB") -> list[Image.Image]:
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert(mode).resize((width, height), Image.BICUBIC))
        except OSError as error:
            raise LaddError(f"cannot read image {path} ({error})") from None
    return images


def check_plan(out: Path, settings: dict) -> None:
    """Write plan.json, or refuse a folder holding data made with other settings."""
    plan_file = out / PLAN_FILE
    if plan_file.exists():
        previous = json.loads(plan_file.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise LaddError(f"{out} holds data made with other settings ({', '.join(changed)}); use a new --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(settings, indent=1))


def run(args) -> int:
    out = Path(args.out)
    try:
        model = pipeline_folder(args.model)
    except ValueError as error:  # what is missing and how to get it
        raise LaddError(f"--model: {error}") from None
    pipeline_class = pipeline_class_of(model)
    conditions = condition_columns(pipeline_class, real=bool(args.images))
    table, source = read_sources(args, conditions)
    defaults = read_sampling_defaults(model)
    num = args.num or len(table)
    rows = table.iloc[[i % len(table) for i in range(num)]].reset_index(drop=True)  # cycle a short file
    default_size = args.size or ((defaults["width"], defaults["height"]) if "width" in defaults and "height" in
                                 defaults and not {"width", "height"} <= set(table.columns) else None)
    plan = shard_plan(row_sizes(rows, args.size or default_size, str(source)), args.shard_size)
    steps = args.steps or defaults.get("num_inference_steps", 50)
    guidance = args.guidance if args.guidance is not None else defaults.get("guidance_scale", 4.0)
    max_sequence_length = defaults.get("max_sequence_length", 256)
    settings = {"model": str(model), "source": "images" if args.images else "teacher", "file": str(source),
                "file_sha256": file_digest(source), "num": num, "shard_size": args.shard_size, "seed": args.seed,
                "max_sequence_length": max_sequence_length, "shards": plan}
    call_extra = {"image_guidance_scale": defaults["image_guidance_scale"]} \
        if "image_guidance_scale" in defaults and not args.images else {}
    if args.image_guidance is not None and not args.images:
        call_extra["image_guidance_scale"] = args.image_guidance
    if args.images:
        settings["posterior"] = args.posterior
    else:
        settings.update(steps=steps, guidance=guidance, **call_extra)
    if conditions:
        settings["conditions"] = conditions
    check_plan(out, settings)

    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    todo = [s for s in plan if not shard_path(out, s["index"]).exists()]
    bar = tqdm(total=num, initial=num - sum(len(s["rows"]) for s in todo), desc=f"synth ({settings['source']})",
               unit="latent")
    for shard in todo:
        width, height = shard["width"], shard["height"]
        parts: dict[str, list[torch.Tensor]] = {"latents": [], "prompt_embeds": [], "pooled_prompt_embeds": []}
        for start in range(0, len(shard["rows"]), args.batch_size):
            batch_rows = shard["rows"][start:start + args.batch_size]
            prompts = [rows["prompt"][i] for i in batch_rows]
            seeds = [latent_seed(args.seed, i) for i in batch_rows]
            condition = {argument: open_images([rows[column][i] for i in batch_rows], width, height,
                                               "L" if argument == "mask_image" else "RGB")
                         for argument, column in conditions.items()}
            if args.images:
                pixels = load_images([Path(rows["image"][i]) for i in batch_rows], width, height)
                latents = encode_images(pipe.vae, pixels, sample=args.posterior == "sample",
                                        generator=torch.Generator().manual_seed(seeds[0]))
            else:
                shape = (pipe.transformer.config.out_channels, height // pipe.vae_scale_factor,
                         width // pipe.vae_scale_factor)  # as the pipeline's prepare_latents shapes it
                latents = generate_latents(pipe, prompts, width, height, initial_noise(seeds, shape), steps, guidance,
                                           max_sequence_length, **condition, **call_extra)
            tensors = {"latents": latents, **dict(zip(("prompt_embeds", "pooled_prompt_embeds"),
                                                      encode_prompts(pipe, prompts, max_sequence_length)))}
            if conditions:
                tensors["image_latents"] = pipe.prepare_condition(**condition, height=height, width=width)
            for name, tensor in tensors.items():
                parts.setdefault(name, []).append(tensor.float())
            bar.update(len(batch_rows))
        write_shard(shard_path(out, shard["index"]), {k: torch.cat(v) for k, v in parts.items()},
                    [rows["prompt"][i] for i in shard["rows"]], width, height)
    bar.close()
    print(f"{len(plan)} shards, {num} latents in {out}")
    return 0


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="data-generator pipeline folder (usually the teacher) or "
                                                       "cached hub id; with --images, the model whose VAE encodes")
    parser.add_argument("--out", required=True, help="output folder for the shards")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help="prompt file: .txt (one a line) or .csv ('prompt', optional 'width', "
                                          "'height'); the teacher makes one latent per row")
    source.add_argument("--images", help="CSV of real images ('image', 'prompt', optional 'width', 'height'): "
                                         "VAE-encoded instead of generated (the real-data ablation)")
    parser.add_argument("--num", type=int, default=0, help="number of latents (default: one per row; a shorter "
                                                           "file is cycled)")
    parser.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT for every latent (default: the file's "
                                                        "width/height columns, else the model's recorded size)")
    parser.add_argument("--posterior", choices=["sample", "mean"], default="sample",
                        help="--images: a seeded sample of the VAE posterior (default) or its mean")
    parser.add_argument("--steps", type=int, default=0, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="constant CFG scale (default: the model's)")
    parser.add_argument("--image-guidance", type=float, default=None,
                        help="an edit model's constant image guidance scale (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size <= 0 or args.shard_size <= 0 or args.num < 0 or args.steps < 0:
        raise LaddError("--batch-size and --shard-size must be positive, --num and --steps not negative")
    return run(args)


if __name__ == "__main__":
    run_cli(main, PROG)
