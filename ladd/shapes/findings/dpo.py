"""`python -m ladd.shapes.findings.dpo`: Sec. 4.5 / Fig. 8: Diffusion-DPO on the teacher (pairs from the exact
evaluator, and separately from a study's votes), LADD from the DPO teacher, and the DPO-LoRA reapplied to the
students, against the plain chain; metrics at 1 and 4 steps and a study at one step.

Stages, options and outputs: `ladd.shapes.findings` and `ladd.shapes.findings.command`; results in docs/dpo.md.
"""

from ladd.cli import run_cli
from ladd.shapes.findings.command import main_for

PROG = "python -m ladd.shapes.findings.dpo"
main = main_for("dpo")

if __name__ == "__main__":
    run_cli(main, PROG)
