"""Experiment: weight-space soups of LADD students of one lineage; the greedy soup became `models/shapes-turbo`.

Measured: the validation accuracy of weighted averages (0.25 / 0.5 / 0.75) of the guided and the matching-aware
students, and the greedy soup over thirteen forks of the guided student (five kept), which `python -m bench.select`
then chose as the committed student. Written up in docs/notebook/ladd-results-diary.md ("A soup of the two
students", "A greedy soup of five forks"); the recipe is in docs/ladd-results.md. The recorded results ran at
2b9729b (weighted soups) and b234858 (greedy soup).

The script averages the transformers of students that share a lineage into one student folder.

    python experiments/student_soup.py --students DIR_A DIR_B --weights 0.5 0.5 --out results/students/soup-50

Two students forked from one parent sit close in weight space, so a weighted average of their parameters is a
student that can keep what each fork learned (Wortsman et al., 2022, "Model soups"). Not in the LADD paper: a
soup is a candidate like any checkpoint, chosen on the validation prompts (`python -m bench.select --candidates`),
then tested on the held-out ones. The result is an ordinary pipeline folder (4-step, guidance-free defaults;
components identical to the teacher's become links to them).

    python experiments/student_soup.py --greedy --students DIR_OR_CHECKPOINT ... --out results/students/greedy

`--greedy` chooses the ingredients on the validation prompts instead of taking weights: the "greedy soup" of the
same paper. Every ingredient (a student folder or a training checkpoint's EMA student) is ranked by its own
validation mean over the 1-, 2- and 4-step samplers (`bench.select`'s rule), best first; each joins the
soup when the uniform average with it scores at least as well as the soup without it.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Callable, Hashable
from functools import cache
from pathlib import Path

import torch

from bench.select import SAMPLERS, validation_accuracy
from ladd.checkpoint import CHECKPOINT_FILE, export_student, load_student
from ladd.paths import MODELS_DIR, RESULTS_DIR
from ladd.timesteps import StudentTimesteps


def check_weights(count: int, weights: list[float]) -> None:
    if count != len(weights) or not weights:
        raise ValueError(f"{count} students but {len(weights)} weights")
    if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(f"the weights must sum to 1, not {sum(weights):g}")


def soup_state_dict(state_dicts: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """sum_i w_i * theta_i over parameters of the same names and shapes; the weights must sum to 1."""
    check_weights(len(state_dicts), weights)
    first = state_dicts[0]
    for other in state_dicts[1:]:
        if other.keys() != first.keys() or any(other[k].shape != first[k].shape for k in first):
            raise ValueError("the students differ in architecture: only students of one config can be averaged")
    return {name: sum(w * sd[name].double() for w, sd in zip(weights, state_dicts)).to(first[name].dtype)
            for name in first}


def greedy_soup(ingredients: list[Hashable], score: Callable[[tuple], float]) -> list[tuple[tuple, float, bool]]:
    """Wortsman et al. (2022), "greedy soup": rank the ingredients by `score((ingredient,))`, best first (ties keep
    the given order); each joins the soup when `score` of the uniform soup with it is at least that without it.
    Returns every soup tried, in order, as (ingredients, score, kept); the last kept one is the greedy soup."""
    ranked = sorted(ingredients, key=lambda ingredient: score((ingredient,)), reverse=True)
    soup = tuple(ranked[:1])
    steps = [(soup, score(soup), True)]
    for ingredient in ranked[1:]:
        tried = (*soup, ingredient)
        kept = score(tried) >= score(soup)
        steps.append((tried, score(tried), kept))
        soup = tried if kept else soup
    return steps


def ingredient_name(folder: Path) -> str:
    """A short unique name: a checkpoint by its run and iteration (`fork-mismatch-step-001500`), a folder by name."""
    return f"{folder.parent.parent.name}-{folder.name}" if (folder / CHECKPOINT_FILE).is_file() else folder.name


def write_soup(students: list[Path], weights: list[float], state_dicts: dict, teacher: Path, out: Path) -> Path:
    """The weighted soup of `students` (folders or checkpoints, their parameters in `state_dicts`) as a pipeline
    folder at `out`."""
    soup, timesteps = load_student(students[0])  # the module the averaged parameters go into
    soup.load_state_dict(soup_state_dict([state_dicts[folder] for folder in students], weights))
    return export_student(teacher, soup, out, timesteps or StudentTimesteps(), link_teacher=True)[0]


def choose_greedy_soup(students: list[Path], state_dicts: dict, teacher: Path, scores_dir: Path,
                       limit: list[str] = ()):
    """`greedy_soup` over student folders / checkpoints, scored by the validation mean (`bench.select`'s rule).
    Soups are written to `<scores_dir>/soups/soup-<hash of their ingredients>` so that a rerun resumes.
    Returns the kept ingredients and the markdown lines of every score."""
    names = {folder: ingredient_name(folder) for folder in students}
    if len(set(names.values())) < len(names):
        raise ValueError("two ingredients share a name; their results would share a folder")
    lines = ["| ingredients | " + " | ".join(SAMPLERS) + " | mean | kept |", "|" + "---|" * 6]

    @cache
    def score(soup: tuple[Path, ...]) -> tuple[float, list[float]]:
        if len(soup) == 1:
            folder, name = soup[0], names[soup[0]]
        else:
            name = "soup-" + hashlib.sha1("\n".join(sorted(map(str, soup))).encode()).hexdigest()[:10]
            folder = scores_dir / "soups" / name
            if not (folder / "transformer").is_dir():
                write_soup(list(soup), [1 / len(soup)] * len(soup), state_dicts, teacher, folder)
        accuracy = validation_accuracy(folder, scores_dir / name, limit)
        return sum(accuracy) / len(accuracy), accuracy

    steps = greedy_soup(students, lambda ingredients: score(ingredients)[0])
    for tried, _, kept in steps:
        mean, accuracy = score(tried)
        label = " + ".join(names[folder] for folder in tried)
        lines.append(f"| {label} | " + " | ".join(f"{100 * a:.1f}" for a in accuracy)
                     + f" | {100 * mean:.1f} | {'yes' if kept else 'no'} |")
    return list([tried for tried, _, kept in steps if kept][-1]), lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", required=True,
                        help="student pipeline folders or training checkpoints (their EMA students) to average")
    parser.add_argument("--weights", nargs="+", type=float, help="one per student, summing to 1")
    parser.add_argument("--greedy", action="store_true",
                        help="choose the ingredients on the validation prompts (greedy soup; uniform weights)")
    parser.add_argument("--scores", default=str(RESULTS_DIR / "greedy-soup"),
                        help="--greedy: bench.run folders of the validation scores, and the soups tried")
    parser.add_argument("--limit", type=int, help="--greedy: only the first N validation prompts (for tests)")
    parser.add_argument("--teacher", default=str(MODELS_DIR / "shapes-sd3"),
                        help="the teacher pipeline the students were distilled from (its other components)")
    parser.add_argument("--out", required=True, help="pipeline folder to write")
    args = parser.parse_args(argv)
    students = [Path(folder) for folder in args.students]
    if args.greedy == (args.weights is not None):
        raise SystemExit("error: give either --weights (one per student) or --greedy")
    try:
        if not args.greedy:
            check_weights(len(students), args.weights)  # before any loading
        state_dicts = {folder: load_student(folder)[0].state_dict() for folder in students}  # each loaded once
        if args.greedy:
            limit = ["--limit", str(args.limit)] if args.limit else []
            students, lines = choose_greedy_soup(students, state_dicts, Path(args.teacher), Path(args.scores), limit)
            print("\n".join(lines) + "\n")
        weights = args.weights or [1 / len(students)] * len(students)
        path = write_soup(students, weights, state_dicts, Path(args.teacher), Path(args.out))
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {path}: {' + '.join(f'{w:g} x {s}' for w, s in zip(weights, students))}")


if __name__ == "__main__":
    main()
