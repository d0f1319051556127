"""Preference pairs from the shapes world's exact evaluator: `python -m ladd.shapes.preferences --model TEACHER
--prompts N --samples K --out DIR/pairs.parquet`.

The teacher draws K images of each of N random prompts (never a held-out one); the exact evaluator judges each, and
every prompt with both passing and failing images gives pairs (a passing image preferred over a failing one, at most
`--pairs-per-prompt`), weighted equally. The images go beside the table (`DIR/images/`); the table is `ladd.preferences`'
format, for `python -m ladd.dpo preferences=DIR/pairs.parquet`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.pipelines import load_pipeline, pipeline_folder
from ladd.preferences import write_preferences
from ladd.sampling import read_sampling_defaults
from ladd.shapes.evaluate import evaluate
from ladd.shapes.prompts import shapes_prompts

PROG = "python -m ladd.shapes.preferences"


def evaluator_pairs(images: list, passed: list[bool], max_pairs: int, rng: np.random.Generator) -> list[tuple]:
    """(preferred, rejected) index pairs of one prompt's images: passing over failing, at most `max_pairs`."""
    good = [i for i, ok in enumerate(passed) if ok]
    bad = [i for i, ok in enumerate(passed) if not ok]
    pairs = [(g, b) for g in good for b in bad]
    rng.shuffle(pairs)
    return pairs[:max_pairs]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the teacher pipeline folder")
    parser.add_argument("--prompts", type=int, required=True, help="how many random prompts")
    parser.add_argument("--samples", type=int, default=4, help="images per prompt (K)")
    parser.add_argument("--pairs-per-prompt", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0, help="sampling steps (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)  # another stream than ladd.shapes.prompts' default
    parser.add_argument("--out", required=True, help="the table to write (.parquet or .csv)")
    args = parser.parse_args(argv)
    if min(args.prompts, args.samples, args.pairs_per_prompt, args.batch_size) <= 0 or args.samples < 2:
        raise LaddError("--prompts, --pairs-per-prompt and --batch-size must be positive, --samples at least 2")
    try:
        model = pipeline_folder(args.model)
    except ValueError as error:
        raise LaddError(f"--model: {error}") from None
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    defaults = read_sampling_defaults(model)
    if args.steps:
        defaults["num_inference_steps"] = args.steps
    out = Path(args.out)
    images_dir = out.parent / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    prompts = shapes_prompts(args.prompts, args.seed)
    jobs = [(p, k) for p in range(len(prompts)) for k in range(args.samples)]
    passed = {}
    for start in tqdm(range(0, len(jobs), args.batch_size), desc="sampling"):
        chunk = jobs[start:start + args.batch_size]
        generators = [torch.Generator().manual_seed(args.seed * 1_000_003 + p * 97 + k) for p, k in chunk]
        images = pipe([prompts[p] for p, _ in chunk], generator=generators, **defaults).images
        for (p, k), image in zip(chunk, images):
            image.save(images_dir / f"{p:06d}_{k}.png")
            passed[p, k] = evaluate(image, prompts[p]).correct
    rng = np.random.default_rng(args.seed)
    rows = []
    for p, prompt in enumerate(prompts):
        for good, bad in evaluator_pairs(list(range(args.samples)), [passed[p, k] for k in range(args.samples)],
                                         args.pairs_per_prompt, rng):
            rows.append({"prompt": prompt, "preferred": str((images_dir / f"{p:06d}_{good}.png").resolve()),
                         "rejected": str((images_dir / f"{p:06d}_{bad}.png").resolve()), "source": "evaluator",
                         "weight": 1.0})
    if not rows:
        raise LaddError("no prompt had both a passing and a failing image: more --samples or --prompts")
    write_preferences(pd.DataFrame(rows), out)
    accuracy = np.mean(list(passed.values()))
    print(f"{len(rows)} pairs from {len(prompts)} prompts ({accuracy:.1%} of {len(jobs)} images pass) -> {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
