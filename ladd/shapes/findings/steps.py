"""`python -m ladd.shapes.findings.steps`: Fig. 11: 1 against 4 steps of the same student, by metrics and by a
study against 1 step and the teacher (evaluator-grounded annotators). `--student DIR` measures a given student
instead of the centre arm.

Stages, options and outputs: `ladd.shapes.findings` and `ladd.shapes.findings.command`; results in docs/findings.md.
"""

from ladd.cli import run_cli
from ladd.shapes.findings.command import main_for

PROG = "python -m ladd.shapes.findings.steps"
main = main_for("steps")

if __name__ == "__main__":
    run_cli(main, PROG)
