"""The shapes world's fixed prompt sets: `python -m ladd.shapes.heldout [--split val]` (re)writes them.

held-out (prompts/shapes_heldout.csv): the test set. 256 rows, 64 per category, sizes spread over the three aspect
buckets. Single-object and size prompts come from a small grammar (24 colour-shape pairs), so those categories
repeat 32 distinct prompts twice each; counting and two-object prompts are all distinct. Every held-out prompt
string is excluded from the zoo's training data and from LADD's synthetic data.

edits (prompts/shapes_edits.csv): the edit benchmark. 280 edits, 40 of each kind (`ladd.shapes.edits`), sizes spread
over the buckets; each row names its edit exactly by (kind, seed, width, height). No training edit has a held-out
edit's (source prompt, instruction).

validation (prompts/shapes_val.csv): for choosing among checkpoints without looking at the test set. 512 rows, 128
per category, built the same way from another seed and sharing no prompt with the held-out set. It may share
prompts with training data (the pools were drawn before it existed), so it measures selection, not generalisation.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from ladd.cli import OneLineParser, run_cli
from ladd.paths import PROMPTS_DIR
from ladd.shapes.edits import EDIT_KINDS, edit_from_seed
from ladd.shapes.grammar import CATEGORIES, sample_scene, scene_to_prompt
from ladd.shapes.render import BUCKETS

HELDOUT_PATH = PROMPTS_DIR / "shapes_heldout.csv"
VAL_PATH = PROMPTS_DIR / "shapes_val.csv"
EDITS_PATH = PROMPTS_DIR / "shapes_edits.csv"
ROWS_PER_CATEGORY = 64
DISTINCT = {"single": 32, "size": 32, "counting": 64, "two_object": 64}
SEED = 20240318  # the LADD paper's arXiv date; any fixed number would do
VAL_ROWS_PER_CATEGORY = 128
VAL_DISTINCT = {"single": 32, "size": 64, "counting": 128, "two_object": 128}
VAL_SEED = SEED + 1
EDITS_PER_KIND = 40
EDITS_SEED = SEED + 2


def make_prompt_set(seed: int, rows_per_category: int, distinct_per_category: dict[str, int],
                    exclude: set[str] = frozenset()) -> pd.DataFrame:
    """`rows_per_category` rows per grammar category, cycling through that many distinct random prompts (none in
    `exclude`), with image sizes cycling through the aspect buckets."""
    rng = np.random.default_rng(seed)
    rows = []
    for category in CATEGORIES:
        distinct: list[str] = []
        while len(distinct) < distinct_per_category[category]:
            prompt = scene_to_prompt(sample_scene(rng, category))
            if prompt not in distinct and prompt not in exclude:
                distinct.append(prompt)
        for i in range(rows_per_category):
            rows.append({"prompt": distinct[i % len(distinct)], "category": category})
    frame = pd.DataFrame(rows)
    frame["width"] = [BUCKETS[i % len(BUCKETS)][0] for i in range(len(frame))]
    frame["height"] = [BUCKETS[i % len(BUCKETS)][1] for i in range(len(frame))]
    return frame


def make_heldout(seed: int = SEED) -> pd.DataFrame:
    return make_prompt_set(seed, ROWS_PER_CATEGORY, DISTINCT)


def make_validation(seed: int = VAL_SEED) -> pd.DataFrame:
    return make_prompt_set(seed, VAL_ROWS_PER_CATEGORY, VAL_DISTINCT, exclude=set(make_heldout()["prompt"]))


def make_heldout_edits(seed: int = EDITS_SEED) -> pd.DataFrame:
    """EDITS_PER_KIND edits of every kind; row i of a kind is the edit of seed `seed * 1000 + i` at bucket i % 3."""
    rows = []
    for kind in EDIT_KINDS:
        for i in range(EDITS_PER_KIND):
            width, height = BUCKETS[i % len(BUCKETS)]
            edit = edit_from_seed(kind, seed * 1000 + i, width, height)
            rows.append({"kind": kind, "seed": seed * 1000 + i, "width": width, "height": height,
                         "source_prompt": edit.source_prompt, "instruction": edit.instruction,
                         "target_prompt": edit.target_prompt})
    return pd.DataFrame(rows)


def load_heldout_edits(path=EDITS_PATH) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def heldout_edit_keys(path=EDITS_PATH) -> set[tuple[str, str]]:
    """The (source prompt, instruction) of every held-out edit: training edits avoid them."""
    if not path.is_file():
        return set()
    frame = load_heldout_edits(path)
    return set(zip(frame["source_prompt"], frame["instruction"]))


def load_heldout(path=HELDOUT_PATH) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def heldout_prompts(path=HELDOUT_PATH) -> set[str]:
    return set(load_heldout(path)["prompt"]) if path.is_file() else set()


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m ladd.shapes.heldout", description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["heldout", "val", "edits"], default="heldout")
    parser.add_argument("--out", help="default: prompts/shapes_heldout.csv, shapes_val.csv or shapes_edits.csv")
    args = parser.parse_args(argv)
    make, path = {"heldout": (make_heldout, HELDOUT_PATH), "val": (make_validation, VAL_PATH),
                  "edits": (make_heldout_edits, EDITS_PATH)}[args.split]
    frame = make()
    out = args.out or path
    frame.to_csv(out, index=False)
    distinct = frame["prompt" if "prompt" in frame else "instruction"].nunique()
    print(f"wrote {len(frame)} {args.split} rows ({distinct} distinct prompts or instructions) to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, "python -m ladd.shapes.heldout")
