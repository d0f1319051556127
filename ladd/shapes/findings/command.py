"""The command every finding shares: `python -m ladd.shapes.findings.<finding> [options]`.

    --plan          list the stages, their commands and what is done; run nothing
    --stage GROUP   run only zoo, dpo, data, train, bench, study or table stages (default: all, in that order),
                    or one stage by its key from --plan (e.g. teacher-d8): two commands can then use both cores
    --smoke         tiny models, seconds (the tests); work folder results/findings-smoke, tables under it
    --work DIR      the work folder, shared by the findings (default results/findings)
    --out DIR       where the tables go (default docs/findings)

The protocol is fixed per work folder (`protocol.json`): a second call with other protocol options is refused
rather than mixing runs of two protocols. Options that change it for every arm: --iterations, --train-prompts,
--samples-per-prompt, --teacher-steps (the zoo's teachers of other depths, default its 12,000).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from ladd.cli import LaddError, OneLineParser
from ladd.paths import REPO_ROOT, RESULTS_DIR
from ladd.shapes.findings import definitions
from ladd.shapes.findings.plan import bench_stages, data_stages, dpo_stages, study_stages, train_stages, zoo_stages
from ladd.shapes.findings.protocol import FULL, SMOKE, Layout, Protocol
from ladd.shapes.findings.stages import GROUPS, Stage, plan_text, run_stages, select, unique


def finding_stages(finding: definitions.Finding, protocol: Protocol, layout: Layout, out: Path, kind: str,
                   student: Path | None) -> list[Stage]:
    depths = {d for arm in finding.arms for d in (arm.student_depth, arm.teacher_depth, arm.generator_depth)}
    stages = zoo_stages(protocol, layout, depths | {protocol.centre})
    stages += dpo_stages(protocol, layout, list(finding.dpo_sources))
    stages += data_stages(protocol, layout, list(finding.arms))
    stages += train_stages(protocol, layout, list(finding.arms))
    stages += bench_stages(protocol, layout, list(finding.runs))
    if finding.study is not None:
        stages += study_stages(finding.study.name, finding.study.model, list(finding.study.baselines), protocol, layout)
    stages.append(Stage(f"table-{finding.name}", "table", always=True,
                        step=lambda: definitions.write_tables(finding, protocol, layout, out, kind)))
    return unique(stages)


def protocol_record(protocol: Protocol) -> dict:
    return json.loads(json.dumps(asdict(protocol), default=str))


def check_protocol(layout: Layout, protocol: Protocol) -> None:
    """One protocol per work folder: refuse to mix runs of two. A setting the folder's record lacks (added to the
    protocol since, for stages it has not run) is recorded, not refused."""
    path = layout.work / "protocol.json"
    record = protocol_record(protocol)
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in record if k in previous and previous[k] != record[k])
        if changed:
            raise LaddError(f"{layout.work} holds runs of another protocol ({', '.join(changed)} differ); pass "
                            f"another --work or the same options")
        if set(record) - set(previous):
            path.write_text(json.dumps({**previous, **record}, indent=1))
    else:
        layout.work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))


def build_parser(name: str) -> OneLineParser:
    parser = OneLineParser(prog=f"python -m ladd.shapes.findings.{name}",
                           description=f"Reproduce the paper's {name} finding in the shapes world.",
                           epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models, seconds (for the tests)")
    parser.add_argument("--stage", default="all", help=f"all, one of {', '.join(GROUPS)}, or a stage key from --plan")
    parser.add_argument("--plan", action="store_true", help="list the stages and what is done; run nothing")
    parser.add_argument("--work", help="work folder (default results/findings, or results/findings-smoke)")
    parser.add_argument("--out", help="tables folder (default docs/findings, or WORK/tables with --smoke)")
    parser.add_argument("--iterations", type=int, help=f"LADD iterations of every arm (default {FULL.iterations})")
    parser.add_argument("--train-prompts", type=int, help=f"training prompts (default {FULL.train_prompts})")
    parser.add_argument("--samples-per-prompt", type=int, help=f"images per held-out prompt (default "
                                                               f"{FULL.samples_per_prompt})")
    parser.add_argument("--teacher-steps", type=int, help="training steps of the teachers of other depths (default: "
                                                          "the zoo config's, as the committed teacher's)")
    if name == "steps":
        parser.add_argument("--student", help="a student pipeline folder to measure instead of the centre arm "
                                              "(e.g. models/shapes-turbo)")
    return parser


def protocol_from(args) -> Protocol:
    protocol = SMOKE if args.smoke else FULL
    changes = {k: getattr(args, k) for k in ("iterations", "train_prompts", "samples_per_prompt")
               if getattr(args, k) is not None}
    for key, value in changes.items():
        if value < 1:
            raise LaddError(f"--{key.replace('_', '-')} must be at least 1")
    if args.teacher_steps is not None:
        if args.teacher_steps < 1:
            raise LaddError("--teacher-steps must be at least 1")
        changes["zoo_overrides"] = (f"teacher.steps={args.teacher_steps}",)
    return replace(protocol, **changes)


def main_for(name: str):
    """The `main(argv)` of the finding `name`."""

    def main(argv: list[str] | None = None) -> int:
        args = build_parser(name).parse_args(argv)
        protocol = protocol_from(args)
        work = Path(args.work) if args.work else RESULTS_DIR / ("findings-smoke" if args.smoke else "findings")
        out = Path(args.out) if args.out else (work / "tables" if args.smoke else REPO_ROOT / "docs" / "findings")
        layout = Layout(work.absolute())
        student = Path(args.student) if getattr(args, "student", None) else None
        if student is not None and not (student / "model_index.json").is_file():
            raise LaddError(f"--student {student}: not a pipeline folder (no model_index.json)")
        finding = definitions.FINDINGS[name](protocol, layout, student)
        stages = finding_stages(finding, protocol, layout, out, "smoke" if args.smoke else "full", student)
        if args.plan:
            print(plan_text(layout.work, stages))
            return 0
        chosen = select(stages, args.stage)
        if not chosen and args.stage not in ("all", *GROUPS):
            raise LaddError(f"--stage {args.stage}: not a group ({', '.join(GROUPS)}) nor a stage of {name} "
                            f"(see --plan)")
        check_protocol(layout, protocol)
        start = time.time()
        ran = run_stages(layout.work, chosen)
        print(f"{name}: {ran} stage(s) run in {(time.time() - start) / 60:.1f} min; work folder {layout.work}")
        return 0

    return main
