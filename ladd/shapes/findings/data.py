"""`python -m ladd.shapes.findings.data`: Fig. 5: synthetic against real data (the same prompts rendered), each
with and without L_distill.

Stages, options and outputs: `ladd.shapes.findings` and `ladd.shapes.findings.command`; results in docs/findings.md.
"""

from ladd.cli import run_cli
from ladd.shapes.findings.command import main_for

PROG = "python -m ladd.shapes.findings.data"
main = main_for("data")

if __name__ == "__main__":
    run_cli(main, PROG)
