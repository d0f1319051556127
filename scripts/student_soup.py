"""Average the transformers of students that share a lineage (a weight-space "soup") into one student folder.

    python scripts/student_soup.py --students DIR_A DIR_B --weights 0.5 0.5 --out results/students/soup-50

Two students forked from one parent sit close in weight space, so a weighted average of their parameters is a
student that can keep what each fork learned (Wortsman et al., 2022, "Model soups"). Not in the LADD paper: a
soup is a candidate like any checkpoint, chosen on the validation prompts (`scripts/ladd_select.py --candidates`),
then tested on the held-out ones. The result is an ordinary pipeline folder (4-step, guidance-free defaults;
components identical to the teacher's become links to them).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ladd.checkpoint import export_student, load_student
from ladd.paths import MODELS_DIR


def soup_state_dict(state_dicts: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """sum_i w_i * theta_i over parameters of the same names and shapes; the weights must sum to 1."""
    if len(state_dicts) != len(weights) or not state_dicts:
        raise ValueError(f"{len(state_dicts)} students but {len(weights)} weights")
    if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(f"the weights must sum to 1, not {sum(weights):g}")
    first = state_dicts[0]
    for other in state_dicts[1:]:
        if other.keys() != first.keys() or any(other[k].shape != first[k].shape for k in first):
            raise ValueError("the students differ in architecture: only students of one config can be averaged")
    return {name: sum(w * sd[name].double() for w, sd in zip(weights, state_dicts)).to(first[name].dtype)
            for name in first}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", required=True, help="pipeline folders of the students to average")
    parser.add_argument("--weights", nargs="+", type=float, required=True, help="one per student, summing to 1")
    parser.add_argument("--teacher", default=str(MODELS_DIR / "shapes-sd3"),
                        help="the teacher pipeline the students were distilled from (its other components)")
    parser.add_argument("--out", required=True, help="pipeline folder to write")
    args = parser.parse_args(argv)
    for folder in args.students:
        if not (Path(folder) / "transformer").is_dir():
            raise SystemExit(f"error: {folder} has no transformer/ folder (a student pipeline folder is expected)")
    students = [load_student(folder) for folder in args.students]
    try:
        averaged = soup_state_dict([s.state_dict() for s in students], args.weights)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    soup = students[0]
    soup.load_state_dict(averaged)
    path, linked = export_student(args.teacher, soup, args.out, link_teacher=True)
    print(f"wrote {path}: {' + '.join(f'{w:g} x {s}' for w, s in zip(args.weights, args.students))} "
          f"(linked to the teacher's: {', '.join(linked) or 'nothing'})")


if __name__ == "__main__":
    main()
