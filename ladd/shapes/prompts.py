"""The shapes world's prompt files for LADD's data: `python -m ladd.shapes.prompts --num N --out FILE.csv [--render DIR]`.

Random scenes from the full grammar (never a held-out prompt), each given one of the zoo's three aspect buckets in
the zoo's shares (half square, a quarter landscape, a quarter portrait), written as `prompt,width,height` for
`python -m ladd.synth --prompts FILE.csv`. With `--render DIR` every prompt is also rendered at its size (seeded
like `ladd.synth`'s latent of the same row) into DIR, and the CSV gains an `image` column (relative to the CSV):
real, perfectly aligned data for `ladd.synth --images FILE.csv`, the paper's real-data ablation (Sec. 4.2).
`--masks` (with `--render`) adds a `mask` column of inpainting masks (`bench.masks`' policies, a random one per row):
real data for an inpainting model. `--edits` (with `--render`) writes edits instead (`ladd.shapes.edits`, never a
held-out one): the instruction as `prompt`, the rendered source as `image`, for an edit teacher's synthetic data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.synth import latent_seed
from bench.masks import make_mask, mask_image
from ladd.shapes.data import BUCKET_SHARES
from ladd.shapes.edits import EDIT_KINDS, sample_edit
from ladd.shapes.grammar import sample_scene, scene_to_prompt
from ladd.shapes.heldout import heldout_edit_keys, heldout_prompts
from ladd.shapes.render import BUCKETS, render_prompt

PROG = "python -m ladd.shapes.prompts"


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


def bucket_sizes(num: int, buckets=BUCKETS, shares=BUCKET_SHARES) -> list[tuple[int, int]]:
    """Row i's (width, height): the bucket furthest behind its share so far, so every prefix keeps the shares."""
    targets, counts, sizes = np.array(shares) / sum(shares), np.zeros(len(buckets)), []
    for i in range(num):
        bucket = int(np.argmax(targets * (i + 1) - counts))
        counts[bucket] += 1
        sizes.append(tuple(buckets[bucket]))
    return sizes


def prompt_table(num: int, seed: int = 0) -> pd.DataFrame:
    sizes = bucket_sizes(num)
    return pd.DataFrame({"prompt": shapes_prompts(num, seed), "width": [w for w, _ in sizes],
                         "height": [h for _, h in sizes]})


def edit_table(num: int, images: Path, csv_dir: Path, seed: int = 0) -> pd.DataFrame:
    """`num` edits balanced over the kinds and buckets, sources rendered into `images`: prompt (the instruction),
    image (the source, relative to `csv_dir`), width, height, kind, source_prompt, target_prompt."""
    rng, exclude = np.random.default_rng(seed), heldout_edit_keys()
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (width, height) in enumerate(tqdm(bucket_sizes(num), desc="edits", unit="edit")):
        while True:
            edit = sample_edit(rng, EDIT_KINDS[i % len(EDIT_KINDS)], width, height)
            if (edit.source_prompt, edit.instruction) not in exclude:
                break
        path = images / f"{i:06d}.png"
        if not path.is_file():
            save_png(edit.render()[0], path)
        rows.append({"prompt": edit.instruction, "image": os.path.relpath(path, csv_dir), "width": width,
                     "height": height, "kind": edit.kind, "source_prompt": edit.source_prompt,
                     "target_prompt": edit.target_prompt})
    return pd.DataFrame(rows)


def save_png(image, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)


def mask_table(table: pd.DataFrame, images: Path, csv_dir: Path, seed: int = 0) -> pd.DataFrame:
    """A mask per row (a random `bench.masks` policy, named "train-<row>" apart from the benchmark's masks)."""
    paths, policies = [], []
    for row in table.itertuples():
        path = images / f"{row.Index:06d}-mask.png"
        mask, policy = make_mask(f"train-{row.Index}", seed, int(row.width), int(row.height), "mixed")
        if not path.is_file():
            save_png(mask_image(mask), path)
        paths.append(os.path.relpath(path, csv_dir))
        policies.append(policy)
    return table.assign(mask=paths, mask_policy=policies)


def render_table(table: pd.DataFrame, images: Path, csv_dir: Path, seed: int = 0) -> pd.DataFrame:
    """Render every row into `images` (skipping finished files) and add their paths, relative to `csv_dir`."""
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in tqdm(table.itertuples(), total=len(table), desc="rendering", unit="image"):
        path = images / f"{row.Index:06d}.png"
        if not path.is_file():
            save_png(render_prompt(row.prompt, latent_seed(seed, row.Index), int(row.width), int(row.height)), path)
        paths.append(os.path.relpath(path, csv_dir))
    return table.assign(image=paths)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, required=True, help="number of prompts")
    parser.add_argument("--out", required=True, help="the CSV to write")
    parser.add_argument("--render", metavar="DIR", help="also render every prompt into DIR (an `image` column)")
    parser.add_argument("--masks", action="store_true", help="with --render: an inpainting mask per row (`mask`)")
    parser.add_argument("--edits", action="store_true", help="with --render: edits (instruction, rendered source)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num <= 0:
        raise LaddError(f"--num must be positive, got {args.num}")
    if (args.masks or args.edits) and not args.render:
        raise LaddError("--masks and --edits write images: give --render DIR")
    if args.masks and args.edits:
        raise LaddError("--masks and --edits are two different files: give one")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.edits:
        table = edit_table(args.num, Path(args.render), out.parent, args.seed)
    else:
        table = prompt_table(args.num, args.seed)
        if args.render:
            table = render_table(table, Path(args.render), out.parent, args.seed)
        if args.masks:
            table = mask_table(table, Path(args.render), out.parent, args.seed)
    tmp = out.with_name(out.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, out)
    print(f"wrote {len(table)} prompts to {out}" + (f" (images in {args.render})" if args.render else ""))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
