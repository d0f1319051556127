"""Experiment: the shapes teacher's held-out accuracy against training time, with and without guidance.

Measured: the committed teacher's curve over its EMA snapshots, the same teacher trained past the hour, and a
teacher at twice the learning rate. Written up in docs/notebook/shapes-world-diary.md ("Teacher quality", "Past
the hour"); the plots are docs/img/teacher-curve*.png. The recorded results ran at 6c18f87 (the committed teacher),
88aa8e4 (past the hour) and 0771686 (lr 4e-3).

    python experiments/teacher_curve.py [--teacher models/shapes-sd3]
        [--snapshots results/zoo-build/shapes-sd3-snapshots] [--samples-per-prompt 1]
        [--minutes-before 0 --steps-before 0] [--snapshots-only]

Every EMA snapshot the build saved is put into a copy of the teacher pipeline and benchmarked by `bench.run` on the
shapes suite (256 held-out prompts; 50 steps with the teacher's CFG scale). The final teacher is also run with
guidance off. `--minutes-before` / `--steps-before` shift the axes for a teacher that went on from another
(`teacher.init_from`): the minutes and steps its starting point had trained. Prints a markdown table and writes
docs/img/teacher-curve.png (or `--plot`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from diffusers import SD3Transformer2DModel
from safetensors.torch import load_file

from bench.select import CATEGORIES, score_row, shapes_scores
from ladd.paths import REPO_ROOT, RESULTS_DIR


def snapshot_pipeline(teacher: Path, weights: Path, out: Path) -> Path:
    """A pipeline folder identical to the teacher's except for the transformer weights."""
    if not out.exists():
        shutil.copytree(teacher, out, ignore=shutil.ignore_patterns("transformer"))
        transformer = SD3Transformer2DModel.from_pretrained(teacher / "transformer")
        state = transformer.state_dict()
        state.update(load_file(str(weights)))
        transformer.load_state_dict(state)
        transformer.save_pretrained(out / "transformer")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(REPO_ROOT / "models" / "shapes-sd3"))
    parser.add_argument("--snapshots", default=str(RESULTS_DIR / "zoo-build" / "shapes-sd3-snapshots"))
    parser.add_argument("--out", default=str(RESULTS_DIR / "teacher-curve"))
    parser.add_argument("--plot", default=str(REPO_ROOT / "docs" / "img" / "teacher-curve.png"))
    parser.add_argument("--samples-per-prompt", type=int, default=1)
    parser.add_argument("--minutes-before", type=float, default=0.0)
    parser.add_argument("--steps-before", type=int, default=0)
    parser.add_argument("--snapshots-only", action="store_true",
                        help="only the snapshots' rows, no final teacher and no plot (a run stopped before its end; "
                             "--teacher then only supplies the pipeline around the snapshot weights)")
    args = parser.parse_args(argv)
    teacher, snapshots, out = Path(args.teacher), Path(args.snapshots), Path(args.out)
    samples = ["--samples-per-prompt", str(args.samples_per_prompt)]

    header = "| model | accuracy % | single | two-object | counting | size | CLIP score | FD (CLIP) |"
    lines = [header, "|" + "---|" * 8]
    curve = []
    for record in map(json.loads, (snapshots / "snapshots.jsonl").read_text().splitlines()):
        model = snapshot_pipeline(teacher, snapshots / f"{record['name']}.safetensors", out / "models" / record["name"])
        scores = shapes_scores(model, out / record["name"], samples)
        minutes = args.minutes_before + record["minutes"]
        curve.append((minutes, scores))
        lines.append(score_row(f"EMA at step {args.steps_before + record['step']} ({minutes:.0f} min)", scores))
    if args.snapshots_only:
        print("\n".join(lines))
        return
    final = shapes_scores(teacher, out / "final-cfg", samples)
    lines.append(score_row("final teacher, 50 steps, CFG", final))
    no_cfg = shapes_scores(teacher, out / "final-no-cfg", ["--guidance", "0", *samples])
    lines.append(score_row("final teacher, 50 steps, guidance off", no_cfg))
    print("\n".join(lines))

    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    minutes = [m for m, _ in curve]
    ax.plot(minutes, [100 * s["accuracy"] for _, s in curve], "k-o", label="all")
    for category in CATEGORIES:
        ax.plot(minutes, [100 * s["per_category"][category]["accuracy"] for _, s in curve], "--.", label=category)
    ax.set_xlabel("teacher training minutes (2 CPU cores)")
    ax.set_ylabel("held-out exact accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
