"""Choose a LADD checkpoint on the shapes validation prompts, never on the held-out test prompts.

    python -m bench.select --run results/ladd/shapes-turbo [--from 2000] [--export models/shapes-turbo]
    python -m bench.select --candidates models/shapes-turbo results/students/soup-50 [--export DIR]

Every checkpoint of the run (from `--from` on) and every student folder given with `--candidates` (an earlier
export, a soup) is benchmarked by `bench.run` on the `shapes-val` suite (512 prompts disjoint from the held-out
set) with the 1-, 2- and 4-step consistency samplers, next to the teacher at 50 steps with CFG on the same prompts.
The rule, fixed before looking: the candidate with the highest mean validation accuracy over the three samplers.
An adversarial run does not improve monotonically, so a fixed rule on other prompts keeps the held-out test honest.
Prints a markdown table; `--export` writes the chosen candidate's (EMA) student as a pipeline folder (components
identical to the teacher's become links to them). `bench.run` keeps every candidate's images under `--out`, so a
second call only reads the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError
from bench.run import main as bench_run
from ladd.checkpoint import CHECKPOINT_FILE, complete_checkpoints, export_student, load_student
from ladd.cli import OneLineParser, run_cli
from ladd.paths import MODELS_DIR, RESULTS_DIR
from ladd.timesteps import StudentTimesteps

PROG = "python -m bench.select"
CATEGORIES = ["single", "two_object", "counting", "size"]
SAMPLERS = {"1 step": ["--steps", "1"], "2 steps": ["--steps", "2"], "4 steps": []}


def shapes_scores(model: Path, out: Path, extra: list[str], suite: str = "shapes") -> dict:
    """`bench.run` on a shapes suite (default: the 256 held-out prompts) into `out`; the suite's scores. Resumable:
    finished images are kept."""
    if bench_run(["--model", str(model), "--suite", suite, "--out", str(out), *extra]):
        raise BenchError(f"bench.run failed for {model} {' '.join(extra)}")
    return json.loads((out / "scores.json").read_text())[suite]


def score_row(label: str, scores: dict, relative_to: float | None = None) -> str:
    """Markdown row: accuracy %, [accuracy relative to a reference], per category %, CLIP score, FD in CLIP space."""
    cells = [f"{100 * scores['accuracy']:.1f}"]
    if relative_to is not None:
        cells.append(f"{100 * scores['accuracy'] / relative_to:.1f}%")  # one decimal: a target is a line
    cells += [f"{100 * scores['per_category'][c]['accuracy']:.1f}" for c in CATEGORIES]
    cells += [f"{scores['clip_score']:.3f}", f"{scores['fd_clip']:.2f}"]
    return f"| {label} | " + " | ".join(cells) + " |"


def checkpoints(run: Path, first: int) -> list[tuple[int, Path, dict]]:
    """(iteration, folder, record) of every complete checkpoint from iteration `first` on."""
    records = [(folder, json.loads((folder / CHECKPOINT_FILE).read_text())) for folder in complete_checkpoints(run)]
    return [(record["iteration"], folder, record) for folder, record in records if record["iteration"] >= first]


def validation_accuracy(folder: Path, out: Path, limit: list[str] = ()) -> list[float]:
    """Exact-evaluator accuracy of a student (pipeline folder or checkpoint) on the validation prompts with each of
    SAMPLERS; `bench.run`'s folders `<out>-1-step`, ... keep the images."""
    return [shapes_scores(folder, out.with_name(f"{out.name}-{name.replace(' ', '-')}"), extra + list(limit),
                          suite="shapes-val")["accuracy"] for name, extra in SAMPLERS.items()]


def parse_args(argv):
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="ladd.train output folder: its checkpoints are candidates")
    parser.add_argument("--from", dest="first", type=int, default=0, help="skip checkpoints before this iteration")
    parser.add_argument("--candidates", nargs="*", default=[], help="student pipeline folders that are candidates too")
    parser.add_argument("--teacher", default=str(MODELS_DIR / "shapes-sd3"),
                        help="the reference teacher when no --run is given (a run names its own)")
    parser.add_argument("--limit", type=int, help="only the first N validation prompts (a quick look; tests)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "ladd-select"), help="bench.run folders of every candidate")
    parser.add_argument("--export", help="pipeline folder for the chosen student (e.g. models/shapes-turbo)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    found = checkpoints(Path(args.run), args.first) if args.run else []
    if args.run and not found:
        raise BenchError(f"no checkpoints from iteration {args.first} on in {Path(args.run) / 'checkpoints'}")
    for folder in args.candidates:
        if not (Path(folder) / "transformer").is_dir():
            raise BenchError(f"candidate {folder} has no transformer/ folder (a student pipeline folder)")
    if not found and not args.candidates:
        raise BenchError("nothing to choose from: give --run and/or --candidates")
    teacher = Path(found[0][2]["teacher"]) if found else Path(args.teacher)
    # label -> (folder, output-folder stem): checkpoints by iteration, folders by name
    candidates = {str(iteration): (folder, folder.name) for iteration, folder, _ in found}
    candidates |= {str(folder): (Path(folder), Path(folder).name) for folder in args.candidates}
    stems = [stem for _, stem in candidates.values()]
    if len(set(stems)) < len(stems):
        raise BenchError("two candidates share a folder name; their results would share a folder in --out")
    limit = ["--limit", str(args.limit)] if args.limit else []

    reference = shapes_scores(teacher, out / "teacher", limit, suite="shapes-val")["accuracy"]
    prompts = f"the first {args.limit}" if args.limit else "the 512"
    kind = "candidate" if args.candidates else "iteration"
    lines = [f"Teacher, 50 steps + CFG, on {prompts} validation prompts: {100 * reference:.1f}%", "",
             f"| {kind} | " + " | ".join(SAMPLERS) + " | mean | mean vs teacher |", "|" + "---|" * 6]
    means = {}
    for label, (folder, stem) in candidates.items():
        accuracy = validation_accuracy(folder, out / stem, limit)
        means[label] = sum(accuracy) / len(accuracy)
        relative = f"{100 * means[label] / reference:.0f}%" if reference else "-"  # a teacher at 0: the smoke zoo
        cells = [f"{100 * a:.1f}" for a in accuracy] + [f"{100 * means[label]:.1f}", relative]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    chosen = max(means, key=means.get)
    lines += ["", f"chosen: {'iteration ' if chosen.isdigit() else ''}{chosen}"]
    print("\n".join(lines))
    if args.export:
        folder = candidates[chosen][0]
        student, timesteps = load_student(folder)  # a folder exported without a sigma table: the paper's timesteps
        path, linked = export_student(teacher, student, args.export, timesteps or StudentTimesteps(), link_teacher=True)
        print(f"exported {folder} to {path} (linked to the teacher's: {', '.join(linked) or 'nothing'})")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
