"""Render a report from a human preference study and/or run folders.

    python -m bench.report --study results/study.db --runs results/* --out results/report/
    python -m bench.report --runs results/*  --out results/report/      (metrics only)
    python -m bench.report --study results/study.db --out results/report/ (human study only)
    python -m bench.report --findings docs/findings --out results/findings-report/ (the paper's findings)

Human study: win rate of the model under test against each baseline, per question (prompt alignment, image
quality), with 95% intervals from a bootstrap over prompts and an exact binomial test; Bradley–Terry ratings with
bootstrap intervals; the same per category and challenge (Parti's, on Parti suites); Krippendorff's alpha; what
each annotator-quality filter removed; sample pairs. Runs: metric tables per suite, CLIP score per category, a
scaling plot (runs tagged student_depth / teacher_depth / generator_depth), an editing trade-off plot (runs tagged
image_guidance) and an inpainting FID/LPIPS table, when such runs exist. Findings: a figure per paper finding from
the tables `ladd.shapes.findings` and `bench.report.coverage` write (`bench.report.findings`, docs/findings.md).

Writes index.html (charts, tables, sample images) and summary.md into --out. Inputs are checked before anything is
written, and the report is assembled in a temporary folder first, so a failed run never damages an existing
report. Paths given to --runs that exist but are not run folders (e.g. the study database in `results/*`) are
skipped with a note; a path that does not exist is an error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from bench.errors import BenchError
from bench.report.findings import load_findings
from bench.report.publish import OUTPUTS, build_report
from bench.report.sections import Options
from bench.report.study import load_study
from bench.runfolder import MANIFEST, RunFolderError, is_run_folder, read_runs
from ladd.cli import OneLineParser, run_cli

PROG = "python -m bench.report"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", help="study database (SQLite file or SQLAlchemy URL)")
    parser.add_argument("--study-name", help="which study, when the database holds several")
    parser.add_argument("--runs", nargs="*", default=[], metavar="RUN", help="run folders (results/* is fine)")
    parser.add_argument("--findings", metavar="DIR", help="folder of findings tables (e.g. docs/findings)")
    parser.add_argument("--out", default="results/report", help="output folder")
    parser.add_argument("--bootstrap", type=int, default=Options.bootstrap, help="resamples for win-rate intervals")
    parser.add_argument("--bt-bootstrap", type=int, default=Options.bt_bootstrap,
                        help="refits for Bradley–Terry intervals")
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--pairs", type=int, default=Options.pairs, help="sample pairs shown in index.html")
    parser.add_argument("--image-root", help="override the study's recorded image root")
    parser.add_argument("--min-gold-accuracy", type=float, default=Options.min_gold_accuracy)
    parser.add_argument("--min-seconds", type=float, default=Options.min_seconds,
                        help="minimum median seconds per answer")
    parser.add_argument("--max-side-share", type=float, default=Options.max_side_share,
                        help="share of one side that flags an annotator")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    return Options(**{f.name: getattr(args, f.name) for f in fields(Options)})


def split_run_paths(paths: list[str], out: Path) -> tuple[list[Path], list[Path]]:
    """(run folders, other existing paths to skip); a path that does not exist is an error."""
    runs, skipped = [], []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise RunFolderError(f"run folder not found: {path}")
        if path.resolve() == out.resolve():
            continue
        (runs if is_run_folder(path) else skipped).append(path)
    return runs, skipped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    # Every input is read before anything is written: a bad one leaves an existing report as it was.
    if not args.study and not args.runs and not args.findings:
        raise BenchError("nothing to report: give --study, --runs, --findings or several")
    run_paths, skipped = split_run_paths(args.runs, out)
    if args.runs and not run_paths and not args.study:
        raise RunFolderError(f"none of the --runs paths is a run folder (with {MANIFEST})")
    study = load_study(args.study, args.study_name) if args.study else None
    runs = read_runs(run_paths)
    findings = load_findings(args.findings) if args.findings else None
    if skipped:
        print(f"note: skipped {len(skipped)} path(s) that are not run folders: "
              + ", ".join(str(p) for p in skipped), file=sys.stderr)
    build_report(study, runs, out, options_from(args), findings)
    print(f"wrote {' and '.join(str(out / name) for name in OUTPUTS)}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
