"""Choose a LADD checkpoint on the shapes validation prompts, never on the held-out test prompts.

    python scripts/ladd_select.py [--run results/ladd/shapes-turbo] [--from 4000] [--export models/shapes-turbo]

Every checkpoint of the run (from `--from` on) is benchmarked by `bench.run` on the `shapes-val` suite (512 prompts
disjoint from the held-out set) with the 1-, 2- and 4-step consistency samplers, next to the teacher at 50 steps with
CFG on the same prompts. The rule, fixed before looking: the checkpoint with the highest mean validation accuracy
over the three samplers. Prints a markdown table; `--export` writes the chosen checkpoint's EMA student as a
pipeline folder (components identical to the teacher's become links to them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ladd.checkpoint import CHECKPOINT_FILE, complete_checkpoints, export_checkpoint
from ladd.paths import RESULTS_DIR
from shapes_scores import shapes_scores

SAMPLERS = {"1 step": ["--steps", "1"], "2 steps": ["--steps", "2"], "4 steps": []}


def checkpoints(run: Path, first: int) -> list[tuple[int, Path, dict]]:
    """(iteration, folder, record) of every complete checkpoint from iteration `first` on."""
    records = [(folder, json.loads((folder / CHECKPOINT_FILE).read_text())) for folder in complete_checkpoints(run)]
    return [(record["iteration"], folder, record) for folder, record in records if record["iteration"] >= first]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(RESULTS_DIR / "ladd" / "shapes-turbo"), help="ladd.train output folder")
    parser.add_argument("--from", dest="first", type=int, default=0, help="skip checkpoints before this iteration")
    parser.add_argument("--out", default=str(RESULTS_DIR / "ladd-select"))
    parser.add_argument("--export", help="pipeline folder for the chosen student (e.g. models/shapes-turbo)")
    args = parser.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    found = checkpoints(run, args.first)
    if not found:
        raise SystemExit(f"error: no checkpoints from iteration {args.first} on in {run / 'checkpoints'}")
    teacher = Path(found[0][2]["teacher"])

    reference = shapes_scores(teacher, out / "teacher", [], suite="shapes-val")["accuracy"]
    lines = [f"Teacher, 50 steps + CFG, on the 512 validation prompts: {100 * reference:.1f}%", "",
             "| iteration | " + " | ".join(SAMPLERS) + " | mean | mean vs teacher |", "|" + "---|" * 6]
    means = {}
    for iteration, folder, _ in found:
        accuracy = [shapes_scores(folder, out / f"{folder.name}-{label.replace(' ', '-')}", extra,
                                  suite="shapes-val")["accuracy"] for label, extra in SAMPLERS.items()]
        means[iteration] = sum(accuracy) / len(accuracy)
        cells = [f"{100 * a:.1f}" for a in accuracy] + [f"{100 * means[iteration]:.1f}",
                                                         f"{100 * means[iteration] / reference:.0f}%"]
        lines.append(f"| {iteration} | " + " | ".join(cells) + " |")
    chosen = max(means, key=means.get)
    lines += ["", f"chosen: iteration {chosen}"]
    print("\n".join(lines))
    if args.export:
        folder = next(folder for iteration, folder, _ in found if iteration == chosen)
        path, linked = export_checkpoint(folder, args.export, link_teacher=True)
        print(f"exported {folder} to {path} (linked to the teacher's: {', '.join(linked) or 'nothing'})")


if __name__ == "__main__":
    main()
