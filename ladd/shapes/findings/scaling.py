"""`python -m ladd.shapes.findings.scaling`: Fig. 7: student, teacher and data-generator depth {2, 4, 8} around
the centre 4/4/4, and the study of students of each depth against the centre (evaluator-grounded annotators).

Stages, options and outputs: `ladd.shapes.findings` and `ladd.shapes.findings.command`; results in docs/findings.md.
"""

from ladd.cli import run_cli
from ladd.shapes.findings.command import main_for

PROG = "python -m ladd.shapes.findings.scaling"
main = main_for("scaling")

if __name__ == "__main__":
    run_cli(main, PROG)
