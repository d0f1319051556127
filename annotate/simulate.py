"""Record simulated votes without a browser, through the same database calls the app makes.

    python -m annotate.simulate --db results/study.db --annotators 12 --prefer-first 0.7 [--careless 2]

Each simulated annotator registers (gets the least-covered batch, as in the app) and answers every question of
its batch. An attentive one prefers the model under test (the study's first run) with probability
expit(logit(--prefer-first) + s), where s is a per-prompt shift drawn from N(0, --prompt-spread²): annotators then
agree about prompts, as people do (with --prompt-spread 0 every prompt is preferred with exactly --prefer-first). It answers gold checks correctly with
probability 0.97 and takes 2-8 s per answer. A careless one clicks at random in about 0.4 s. For demos and
tests: the study's truth is then known.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from annotate import db
from annotate.db import QUESTIONS, StudyError
from ladd.cli import OneLineParser, run_cli

PROG = "python -m annotate.simulate"


def prompt_preferences(prompt_ids: pd.Series, prefer_first: float, spread: float,
                       rng: np.random.Generator) -> dict[str, float]:
    """Per-prompt probability of preferring the model, centred (on the logit scale) on `prefer_first`."""
    unique = sorted(prompt_ids.unique())
    shifts = rng.normal(0.0, spread, size=len(unique)) if spread > 0 else np.zeros(len(unique))
    return dict(zip(unique, expit(logit(prefer_first) + shifts)))


def choose(item: dict, careless: bool, p_model: float, model_id: int, rng: np.random.Generator) -> str:
    if careless:
        return db.SIDES[int(rng.integers(2))]
    if item["is_gold"]:
        right = rng.random() < 0.97
        return item["gold_side"] if right else db.SIDES[1 - db.SIDES.index(item["gold_side"])]
    model_side = "left" if item["left_system_id"] == model_id else "right"
    other = "right" if model_side == "left" else "left"
    return model_side if rng.random() < p_model else other


def simulate(engine, study: dict, annotators: int, prefer_first: float, careless: int = 0,
             prompt_spread: float = 1.0, seed: int = 0, prefix: str = "sim", start: float | None = None) -> int:
    """Register `annotators` simulated people (the last `careless` of them careless) and record their votes."""
    rng = np.random.default_rng(seed)
    systems = db.study_systems(engine, study["id"])
    model_id = int(systems.loc[systems["role"] == "model", "id"].iloc[0])
    comparisons = db.study_comparisons(engine, study["id"]).set_index("id")
    preference = prompt_preferences(comparisons["prompt_id"], prefer_first, prompt_spread, rng)
    clock = time.time() if start is None else start
    recorded = 0
    for k in range(annotators):
        is_careless = k >= annotators - careless
        annotator = db.register_annotator(engine, study["id"], f"{prefix}{k:03d}", now=clock)
        items = db.batch_items(engine, study["id"], annotator["batch"])
        for comparison_id in items["id"]:
            item = comparisons.loc[comparison_id].to_dict()
            for question in QUESTIONS:
                clock += rng.uniform(0.3, 0.5) if is_careless else rng.uniform(2.0, 8.0)
                side = choose(item, is_careless, preference[item["prompt_id"]], model_id, rng)
                recorded += db.record_vote(engine, annotator["id"], int(comparison_id), question, side, now=clock)
    return recorded


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--study")
    parser.add_argument("--annotators", type=int, default=12)
    parser.add_argument("--prefer-first", type=float, default=0.7,
                        help="probability (before the per-prompt shift) that an attentive annotator prefers the model")
    parser.add_argument("--careless", type=int, default=0, help="how many of the annotators click at random")
    parser.add_argument("--prompt-spread", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default="sim", help="annotator ids are PREFIX000, PREFIX001, …")
    args = parser.parse_args(argv)
    if not 0.0 < args.prefer_first < 1.0:
        raise StudyError("--prefer-first must be strictly between 0 and 1")
    with db.database_errors(args.db):  # a locked, corrupted or unreachable database: one line, exit 2
        engine = db.make_engine(args.db)
        study = db.get_study(engine, args.study)
        n = simulate(engine, study, args.annotators, args.prefer_first, args.careless, args.prompt_spread,
                     args.seed, args.prefix)
    print(f"recorded {n} votes from {args.annotators} simulated annotators ({args.careless} careless)")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
