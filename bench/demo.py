"""`python -m bench.demo --out results`: two small fake runs for trying the study and the report without a model.

Writes OUT/turbo1 (a 1-step "student") and OUT/teacher50 (a 50-step "teacher") on Parti-style prompts with
categories and challenges: drawn PNGs, manifest.parquet, config.json and a fake scores.json, written by
`bench.runfolder.write_fake_run` through the same writers as `bench.run`.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.runfolder import fake_prompts, fake_scores, write_fake_run
from ladd.cli import OneLineParser, run_cli

PROG = "python -m bench.demo"
SUITE = "parti128"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/demo", help="parent folder of the two runs (default results/demo)")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per run (default 16)")
    parser.add_argument("--samples-per-prompt", type=int, default=4, help="images per prompt (default 4)")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.samples_per_prompt < 1:
        raise BenchError("--prompts and --samples-per-prompt must be at least 1")
    prompts = fake_prompts(args.prompts)
    out = Path(args.out)
    student = write_fake_run(out / "turbo1", "shapes-turbo", 1, prompts, args.samples_per_prompt, suite=SUITE,
                             sharpness=0.6, scores=fake_scores(prompts, SUITE, 0.27))
    teacher = write_fake_run(out / "teacher50", "shapes-sd3", 50, prompts, args.samples_per_prompt, suite=SUITE,
                             sharpness=1.0, guidance=5.0, scores=fake_scores(prompts, SUITE, 0.30))
    print(f"wrote {student} and {teacher}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
