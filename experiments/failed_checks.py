"""Experiment: which of the exact evaluator's checks fail, per prompt category, in a finished shapes run.

Measured: the commonest failed check is the object count: the teacher draws a second copy of the object about as
often as it misses it, the LADD student draws copies about twice as often as the teacher, and count words are read
loosely. Written up in docs/notebook/shapes-world-diary.md ("What
the teacher gets wrong") and docs/notebook/ladd-results-diary.md ("What the student gets wrong"). The recorded
results ran at d809f93 (teacher) and b4474d6 (student).

    python experiments/failed_checks.py RUN [RUN ...]        # bench.run folders of the shapes or shapes-val suite

Accuracy says how often an image is wholly right; this says why the rest are wrong. Each image of the run is
evaluated again (`ladd.shapes.evaluate`), and every check kind (`object`, `count`, `size`, `relation`,
`background`; the group index dropped) is tallied: how many images of a category have that check and how many
of them fail it. A second table is the count confusion of one-group prompts: for each count asked (one, two,
three), how many objects of that colour and shape the images hold. Prints both tables per run.
"""

from __future__ import annotations

import argparse
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd
from PIL import Image

from bench.runfolder import MANIFEST, read_manifest
from ladd.shapes.evaluate import Evaluation, evaluate, group_objects
from ladd.shapes.grammar import parse_prompt


@lru_cache(maxsize=4)
def evaluations(run: Path) -> list[tuple[tuple, Evaluation]]:
    """Every image of the run (manifest row) with its evaluation; cached, so both tables evaluate an image once."""
    return [(image, evaluate(Image.open(run / image.path), image.prompt))
            for image in read_manifest(run).itertuples()]


def failed_checks(run: Path) -> pd.DataFrame:
    """One row per (image, check): category, check kind, passed."""
    rows = []
    for image, evaluation in evaluations(run):
        rows += [(image.category, re.sub(r"_\d+$", "", name), passed) for name, passed in evaluation.checks.items()]
    return pd.DataFrame(rows, columns=["category", "check", "passed"])


def failure_table(checks: pd.DataFrame) -> str:
    """Markdown: per category and check kind, failed / images that have the check (and the share failed)."""
    per_image = checks.groupby(["category", "check"])["passed"].agg(failed=lambda p: int((~p).sum()), total="size")
    lines = ["| category | check | failed | of | failed % |", "|---|---|---|---|---|"]
    for (category, check), row in per_image.iterrows():
        lines.append(f"| {category} | {check} | {row.failed} | {row.total} | {100 * row.failed / row.total:.1f} |")
    return "\n".join(lines)


def count_confusion(run: Path) -> pd.DataFrame:
    """One row per image of a one-group prompt: the count asked and the objects of its colour and shape drawn."""
    rows = []
    for image, evaluation in evaluations(run):
        groups = parse_prompt(image.prompt).groups
        if len(groups) == 1:
            rows.append((groups[0].count, len(group_objects(evaluation.objects, groups[0]))))
    return pd.DataFrame(rows, columns=["asked", "drawn"])


def confusion_table(counts: pd.DataFrame, most: int = 4) -> str:
    """Markdown: per count asked, the share of images (%) drawing 0, 1, ... `most`-or-more such objects."""
    drawn = counts["drawn"].clip(upper=most)
    shares = pd.crosstab(counts["asked"], drawn, normalize="index").reindex(columns=range(most + 1), fill_value=0.0)
    header = [str(n) for n in range(most)] + [f"{most}+"]
    lines = ["| asked | images | " + " | ".join(f"drew {h}" for h in header) + " |", "|---|---|" + "---|" * len(header)]
    for asked, row in shares.iterrows():
        cells = " | ".join(f"{100 * share:.1f}" for share in row)
        lines.append(f"| {asked} | {int((counts['asked'] == asked).sum())} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench.run folders")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not (run / MANIFEST).is_file():
            raise SystemExit(f"error: {run} has no {MANIFEST}; give a finished bench.run folder")
        print(f"## {run}\n\n{failure_table(failed_checks(run))}\n\n{confusion_table(count_confusion(run))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
