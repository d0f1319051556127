"""The shapes world's fixed held-out benchmark: `python -m ladd.shapes.heldout` (re)writes prompts/shapes_heldout.csv.

256 rows, 64 per category, sizes spread over the three aspect buckets. Single-object and size prompts come from a
small grammar (24 colour-shape pairs), so those categories repeat 32 distinct prompts twice each; counting and
two-object prompts are all distinct. Every held-out prompt string is excluded from the zoo's training data.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ladd.paths import PROMPTS_DIR
from ladd.shapes.grammar import CATEGORIES, sample_scene, scene_to_prompt
from ladd.shapes.render import BUCKETS

HELDOUT_PATH = PROMPTS_DIR / "shapes_heldout.csv"
ROWS_PER_CATEGORY = 64
DISTINCT = {"single": 32, "size": 32, "counting": 64, "two_object": 64}
SEED = 20240318  # the LADD paper's arXiv date; any fixed number would do


def make_heldout(seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for category in CATEGORIES:
        distinct: list[str] = []
        while len(distinct) < DISTINCT[category]:
            prompt = scene_to_prompt(sample_scene(rng, category))
            if prompt not in distinct:
                distinct.append(prompt)
        for i in range(ROWS_PER_CATEGORY):
            rows.append({"prompt": distinct[i % len(distinct)], "category": category})
    frame = pd.DataFrame(rows)
    frame["width"] = [BUCKETS[i % len(BUCKETS)][0] for i in range(len(frame))]
    frame["height"] = [BUCKETS[i % len(BUCKETS)][1] for i in range(len(frame))]
    return frame


def load_heldout(path=HELDOUT_PATH) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def heldout_prompts(path=HELDOUT_PATH) -> set[str]:
    return set(load_heldout(path)["prompt"]) if path.is_file() else set()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HELDOUT_PATH))
    args = parser.parse_args(argv)
    frame = make_heldout()
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} held-out prompts ({frame['prompt'].nunique()} distinct) to {args.out}")


if __name__ == "__main__":
    main()
