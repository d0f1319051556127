"""A study's votes as preference data for Diffusion-DPO: `python -m annotate.preferences --db STUDY.db --out FILE`.

Per comparison and question, the votes of the annotators the report keeps (`bench.report.statistics.apply_filters`:
failed gold checks, too fast, one-sided; the gold checks themselves dropped) decide by majority: the majority's
image is preferred, the other rejected, and the pair weighs the majority's share of the votes. Ties are dropped.
The images are the study's own (their paths resolved against its image root, or `--root`); the table is
`ladd.preferences`' format, for `python -m ladd.dpo preferences=FILE`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from annotate import db
from annotate.db import QUESTIONS, StudyError
from bench.report.statistics import apply_filters
from ladd.cli import OneLineParser, run_cli
from ladd.preferences import write_preferences

PROG = "python -m annotate.preferences"


def majority_pairs(votes: pd.DataFrame, questions: tuple[str, ...] = QUESTIONS) -> pd.DataFrame:
    """One row per (comparison, question) with a majority: prompt, preferred/rejected path, source, weight."""
    votes = votes[votes["question"].isin(questions)]
    rows = []
    for (comparison, question), group in votes.groupby(["comparison", "question"], sort=True):
        left = int((group["choice"] == "left").sum())
        right = len(group) - left
        if left == right:
            continue
        first = group.iloc[0]
        winner, loser = ("left", "right") if left > right else ("right", "left")
        rows.append({"prompt": first["prompt"], "preferred": first[f"{winner}_path"],
                     "rejected": first[f"{loser}_path"], "source": f"study:{question}",
                     "weight": max(left, right) / len(group)})
    return pd.DataFrame(rows, columns=["prompt", "preferred", "rejected", "source", "weight"])


def study_preferences(database: str, study: str | None = None, questions: tuple[str, ...] = QUESTIONS,
                      root: str | None = None) -> pd.DataFrame:
    with db.database_errors(database):
        engine = db.make_engine(database)
        info = db.get_study(engine, study)
        votes = db.export_votes(engine, info["id"])
    if votes.empty:
        raise StudyError(f"study {info['name']!r} has no votes yet")
    kept, _ = apply_filters(votes)
    pairs = majority_pairs(kept, questions)
    if pairs.empty:
        raise StudyError(f"study {info['name']!r} has no comparison with a majority among the kept votes")
    base = Path(root or info["root"]).resolve()
    for column in ("preferred", "rejected"):
        pairs[column] = [str(base / path) for path in pairs[column]]
    missing = [p for p in np.concatenate([pairs["preferred"], pairs["rejected"]]) if not Path(p).is_file()]
    if missing:
        raise StudyError(f"{len(missing)} image(s) of the study are missing, first {missing[0]} (pass --root with "
                         "the folder the runs are in now)")
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the study database (SQLite path or SQLAlchemy URL)")
    parser.add_argument("--study", help="the study's name (default: the only one)")
    parser.add_argument("--question", choices=[*QUESTIONS, "both"], default="both",
                        help="which question's votes make pairs (default: both, each its own pair)")
    parser.add_argument("--root", help="where the study's images are now, if not at its recorded root")
    parser.add_argument("--out", required=True, help="the preference table to write (.parquet or .csv)")
    args = parser.parse_args(argv)
    questions = QUESTIONS if args.question == "both" else (args.question,)
    pairs = study_preferences(args.db, args.study, questions, args.root)
    write_preferences(pairs, args.out)
    print(f"{len(pairs)} pairs ({', '.join(f'{n} {s}' for s, n in pairs['source'].value_counts().items())}) "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
