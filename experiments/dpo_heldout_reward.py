"""Experiment: does a DPO-LoRA's preference generalise beyond its training pairs?

Measured for docs/dpo.md ("Why DPO did little here"): the implicit reward margin of a `ladd.dpo` run, r = −β/2 ·
((e_θ(w) − e_ref(w)) − (e_θ(l) − e_ref(l))), on its own training pairs and on fresh pairs of the same kind made on
other prompts (`python -m ladd.shapes.preferences --seed 3 ...`). Each pair is scored at `--draws` (t, noise) draws
from the run's own t distribution, the same draws for every table; a pair counts as ranked right when its mean
margin is positive. Prints a markdown table: pairs, ranked right with a 95% Wilson interval, mean margin.

    python experiments/dpo_heldout_reward.py --run results/findings/dpo/evaluator/dpo-evaluator \
        --tables results/findings/dpo/evaluator/pairs.parquet results/dpo-heldout/pairs.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest

from ladd.dpo import PreferenceLatents, image_size, implicit_reward_margin, pair_errors
from ladd.flow import sample_logit_normal
from ladd.pipelines import load_pipeline
from ladd.preferences import read_preferences
from ladd.sampling import read_sampling_defaults


@torch.no_grad()
def margins(transformer, data: PreferenceLatents, beta: float, logit_mean: float, logit_std: float, draws: int,
            seed: int = 0) -> np.ndarray:
    """Mean implicit reward margin of every pair over `draws` (t, noise) draws."""
    out = []
    for group in data.groups:
        total = torch.zeros(len(group["preferred"]))
        for d in range(draws):
            g = torch.Generator().manual_seed(seed * 1000 + d)
            x0 = group["preferred"]
            t = sample_logit_normal(len(x0), logit_mean, logit_std, generator=g)
            noise = torch.randn(x0.shape, generator=g)
            model_w, model_l = pair_errors(transformer, group, t, noise)
            transformer.disable_adapters()
            ref_w, ref_l = pair_errors(transformer, group, t, noise)
            transformer.enable_adapters()
            total += implicit_reward_margin(model_w, model_l, ref_w, ref_l, beta)
        out.append(total / draws)
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a ladd.dpo output folder (config.json, lora/)")
    parser.add_argument("--tables", nargs="+", required=True, help="preference tables: the training one first")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--work", default="results/dpo-heldout", help="where the pairs' latents are cached")
    args = parser.parse_args()
    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    pipe = load_pipeline(cfg["model"])
    pipe.load_lora_weights(run / "lora", adapter_name="dpo")
    transformer = pipe.transformer.eval()
    max_len = read_sampling_defaults(cfg["model"]).get("max_sequence_length", 256)
    print("| pairs | n | ranked right (95% CI) | mean margin |\n|---|---|---|---|")
    seen = None
    for i, table in enumerate(args.tables):
        pairs = read_preferences(table)
        data = PreferenceLatents(pipe, pairs, Path(args.work) / f"cache-{i}", max_len)
        m = margins(transformer, data, cfg["beta"], cfg["logit_mean"], cfg["logit_std"], args.draws)
        # the cache groups pairs by image size: the prompts in the same order
        sizes = [image_size(p) for p in pairs["preferred"]]
        prompts = np.concatenate([pairs["prompt"].to_numpy()[[s == size for s in sizes]] for size in sorted(set(sizes))])
        rows = [(table, np.ones(len(m), bool))]
        if seen is None:
            seen = set(prompts)
        else:  # prompts drawn again by another seed: the same text, other images
            known = np.array([p in seen for p in prompts])
            rows += [(f"  of which prompts in the training table", known), (f"  of which new prompts", ~known)]
        for name, keep in rows:
            right = int((m[keep] > 0).sum())
            low, high = binomtest(right, int(keep.sum())).proportion_ci(method="wilson")
            print(f"| {name} | {keep.sum()} | {right / keep.sum():.1%} [{low:.1%}, {high:.1%}] | {m[keep].mean():+.3f} |")


if __name__ == "__main__":
    main()
