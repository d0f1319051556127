"""Does the LADD student do better on the prompts it was trained on than on unseen ones?

    python scripts/prompt_gap.py [--student models/shapes-turbo] [--teacher models/shapes-sd3] \
        [--data results/synth/shapes-sd3-t5] [--per-category 43]

The student learns from a fixed set of synthetic latents (12,000 prompts for models/shapes-turbo), each seen ~100
times. If it fitted those prompts rather than the grammar, it would come closer to its teacher on its training
prompts than on the validation prompts, and more synthetic data would be a lever. Both models sample training
prompts in the validation set's mix (`--per-category` of each category from each aspect bucket) and the 512
validation prompts, with their own defaults and the same seed per image; exact-evaluator accuracy in % and the
student's gap to the teacher in points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ladd  # noqa: F401  (before torch: sets OMP_WAIT_POLICY, see ladd/__init__.py)
import numpy as np
import pandas as pd
import torch

from ladd.paths import REPO_ROOT, RESULTS_DIR
from ladd.pipelines import load_pipeline
from ladd.sampling import read_sampling_defaults
from ladd.shapes.evaluate import evaluate
from ladd.shapes.grammar import CATEGORIES, parse_prompt, scene_category
from ladd.synth import read_shard, shard_path
from bench.generate import seed_global_rng
from bench.seeding import stable_seed
from bench.suites import SHAPES_VAL_PATH


def training_prompts(data: Path, per_category: int) -> list[tuple[str, int, int]]:
    """(prompt, width, height): from each aspect bucket's first shard, the first `per_category` prompts of each
    benchmark category — the validation set's mix (training data also holds "mixed" scenes, which it has not)."""
    chosen, seen = [], set()
    for shard in json.loads((data / "plan.json").read_text())["shards"]:
        size = (shard["width"], shard["height"])
        if size in seen:
            continue
        seen.add(size)
        _, prompts = read_shard(shard_path(data, shard["index"]))
        for category in CATEGORIES:
            matching = [p for p in prompts if scene_category(parse_prompt(p)) == category][:per_category]
            chosen += [(prompt, *size) for prompt in matching]
    return chosen


def correct(model: Path, items: list[tuple[str, int, int]], batch_size: int = 64) -> np.ndarray:
    """Exact-evaluator verdict per image; image i's seed is 10,000 + i whichever model draws it, and the global RNG
    (the stock pipeline's consistency sampler draws its renoising noise there) is seeded per batch, as in `bench.run`."""
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    defaults = read_sampling_defaults(model)
    kwargs = {k: defaults[k] for k in ("num_inference_steps", "guidance_scale", "max_sequence_length") if k in defaults}
    by_size: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for i, (prompt, width, height) in enumerate(items):
        by_size.setdefault((width, height), []).append((i, prompt))
    verdicts = np.zeros(len(items), dtype=bool)
    for (width, height), rows in by_size.items():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            seeds = [10_000 + i for i, _ in chunk]
            seed_global_rng(stable_seed("renoise", *seeds))
            images = pipe([p for _, p in chunk], width=width, height=height, **kwargs,
                          generator=[torch.Generator().manual_seed(s) for s in seeds]).images
            for image, (i, prompt) in zip(images, chunk):
                verdicts[i] = evaluate(image, prompt).correct
    return verdicts


def gap_row(name: str, teacher: np.ndarray, student: np.ndarray) -> str:
    """Accuracies, and the student's gap to the teacher with its paired standard error (same prompts and seeds)."""
    difference = 100 * (student.astype(float) - teacher.astype(float))
    error = difference.std(ddof=1) / np.sqrt(len(difference))
    return (f"| {name} | {len(teacher)} | {100 * teacher.mean():.1f} | {100 * student.mean():.1f} | "
            f"{difference.mean():+.1f} ± {error:.1f} | {100 * student.mean() / max(teacher.mean(), 1e-9):.0f}% |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=str(REPO_ROOT / "models" / "shapes-turbo"))
    parser.add_argument("--teacher", default=str(REPO_ROOT / "models" / "shapes-sd3"))
    parser.add_argument("--data", default=str(RESULTS_DIR / "synth" / "shapes-sd3-t5"), help="the student's synth data")
    parser.add_argument("--per-category", type=int, default=43,
                        help="training prompts per category and aspect bucket (43: 516, the validation set's 512)")
    parser.add_argument("--val-limit", type=int, help="only the first N validation prompts")
    parser.add_argument("--samples-per-prompt", type=int, default=1)
    args = parser.parse_args(argv)
    validation = pd.read_csv(SHAPES_VAL_PATH, keep_default_na=False)[: args.val_limit]
    sets = {"training prompts (from the synth data)": training_prompts(Path(args.data), args.per_category),
            "validation prompts (unseen)": list(zip(validation["prompt"], validation["width"], validation["height"]))}
    print("| prompts | images | teacher % | student % | student - teacher (± paired s.e.) | student / teacher |")
    print("|---|---|---|---|---|---|")
    for name, items in sets.items():
        items = items * args.samples_per_prompt  # repeated prompts get later indices, so other seeds
        print(gap_row(name, correct(Path(args.teacher), items), correct(Path(args.student), items)), flush=True)

if __name__ == "__main__":
    main()
