"""`python -m ladd.shapes.findings.renoise`: Fig. 4: the renoising distribution t̂ ~ logit-normal(m, 1),
m ∈ {−1, 0, 1, 2}.

Stages, options and outputs: `ladd.shapes.findings` and `ladd.shapes.findings.command`; results in docs/findings.md.
"""

from ladd.cli import run_cli
from ladd.shapes.findings.command import main_for

PROG = "python -m ladd.shapes.findings.renoise"
main = main_for("renoise")

if __name__ == "__main__":
    run_cli(main, PROG)
