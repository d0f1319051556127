"""Which of the exact evaluator's checks fail, per prompt category, in a finished shapes run.

    python scripts/failed_checks.py RUN [RUN ...]        # bench.run folders of the shapes or shapes-val suite

Accuracy says how often an image is wholly right; this says why the rest are wrong. Each image of the run is
evaluated again (`ladd.shapes.evaluate`), and every check kind (`object`, `count`, `size`, `relation`,
`background`; the group index dropped) is tallied: how many images of a category have that check and how many
of them fail it. Prints one markdown table per run.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import ladd  # noqa: F401  (before torch-backed imports: sets OMP_WAIT_POLICY, see ladd/__init__.py)
import pandas as pd
from PIL import Image

from bench.runfolder import MANIFEST, read_manifest
from ladd.shapes.evaluate import evaluate


def failed_checks(run: Path) -> pd.DataFrame:
    """One row per (image, check): category, check kind, passed."""
    manifest = read_manifest(run)
    rows = []
    for image in manifest.itertuples():
        checks = evaluate(Image.open(run / image.path), image.prompt).checks
        rows += [(image.category, re.sub(r"_\d+$", "", name), passed) for name, passed in checks.items()]
    return pd.DataFrame(rows, columns=["category", "check", "passed"])


def failure_table(checks: pd.DataFrame) -> str:
    """Markdown: per category and check kind, failed / images that have the check (and the share failed)."""
    per_image = checks.groupby(["category", "check"])["passed"].agg(failed=lambda p: int((~p).sum()), total="size")
    lines = ["| category | check | failed | of | failed % |", "|---|---|---|---|---|"]
    for (category, check), row in per_image.iterrows():
        lines.append(f"| {category} | {check} | {row.failed} | {row.total} | {100 * row.failed / row.total:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench.run folders")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not (run / MANIFEST).is_file():
            raise SystemExit(f"error: {run} has no {MANIFEST}; give a finished bench.run folder")
        print(f"## {run}\n\n{failure_table(failed_checks(run))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
