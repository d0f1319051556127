"""The stages of a finding: the commands that make its models, data, runs and study, in the order they run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ladd.shapes.findings.protocol import REAL, SYNTHETIC, Arm, Layout, Protocol
from ladd.shapes.findings.stages import Stage

SUITE = "shapes"
BATCH_SIZE = 40  # comparisons per annotator (annotate.study's default)


@dataclass(frozen=True)
class BenchRun:
    """One benchmark run of a finding: a label (its folder under bench/), the model folder, the step count (None:
    the model's own default), the arm it came from (None for a teacher or a given student) and a DPO-LoRA."""

    label: str
    model: Path
    steps: int | None
    arm: Arm | None = None
    lora: str = ""  # the preference source of a DPO-LoRA merged into the model first (Sec. 4.5's reapplication)

    def tags(self) -> dict:
        return {**(self.arm.tags() if self.arm else {}), "finding_run": self.label}


def arm_run(arm: Arm, steps: int, layout: Layout, lora: str = "") -> BenchRun:
    return BenchRun(f"{arm.name}{f'-lora-{lora}' if lora else ''}-{steps}step", layout.student(arm), steps, arm, lora)


def teacher_run(protocol: Protocol, layout: Layout, depth: int | None = None) -> BenchRun:
    """A pretrained model at its own sampler (the centre's teacher by default)."""
    depth = protocol.centre if depth is None else depth
    return BenchRun(f"teacher-d{depth}", layout.teacher(depth, protocol), None)


# --- zoo and data ---------------------------------------------------------------------------------------------------

def link_committed_zoo(protocol: Protocol, layout: Layout) -> None:
    """The centre teacher and the CLIP are the committed zoo's: linked, not copied (nor rebuilt)."""
    layout.zoo.mkdir(parents=True, exist_ok=True)
    for name in ("shapes-clip", "shapes-sd3"):
        target = layout.zoo / name
        if not target.exists():
            os.symlink((protocol.zoo_reuse / name).resolve(), target)


def zoo_stages(protocol: Protocol, layout: Layout, depths: set[int]) -> list[Stage]:
    work = layout.work / "zoo-build"
    if protocol.smoke_zoo:
        stages = [Stage("zoo", "zoo", "ladd.shapes.build", ["--smoke", "--out", layout.zoo, "--work", work])]
    else:
        stages = [Stage("zoo", "zoo", step=lambda: link_committed_zoo(protocol, layout))]
    for depth in sorted(depths - {protocol.centre}):
        stages.append(Stage(f"teacher-d{depth}", "zoo", "ladd.shapes.build", [
            "--config", protocol.zoo_config, "--out", layout.zoo, "--work", work, 'stages=["teacher"]',
            f"teacher.depth={depth}", f"teacher.name={layout.teacher(depth, protocol).name}",
            *protocol.zoo_overrides]))
    return stages


def teacher_steps(protocol: Protocol) -> list:
    """The sampling steps of a teacher drawing data (none: its own default)."""
    return ["--steps", protocol.synth_steps] if protocol.synth_steps else []


def synth_arguments(protocol: Protocol) -> list:
    return ["--batch-size", protocol.synth_batch, *teacher_steps(protocol)]


def data_stages(protocol: Protocol, layout: Layout, arms: list[Arm]) -> list[Stage]:
    """The training prompts (the same for every data source), synthetic latents per generator depth, and real data:
    the same prompts rendered (exactly aligned images) and encoded by the zoo's VAE. No arms (a given student): none."""
    if not arms:
        return []
    stages = [Stage("prompts", "data", "ladd.shapes.prompts",
                    ["--num", protocol.train_prompts, "--seed", 0, "--out", layout.prompts])]
    for depth, dpo in sorted({(a.generator_depth, a.dpo) for a in arms if a.data == SYNTHETIC}):
        generator = Arm(protocol.centre, protocol.centre, depth, dpo=dpo)
        stages.append(Stage(layout.data(generator).name, "data", "ladd.synth", [
            "--model", layout.pretrained(depth, protocol, dpo), "--prompts", layout.prompts, "--out",
            layout.data(generator), *synth_arguments(protocol)]))
    if any(a.data == REAL for a in arms):
        real = Arm(protocol.centre, protocol.centre, protocol.centre, data=REAL)
        stages.append(Stage("real-render", "data", "ladd.shapes.prompts", [
            "--num", protocol.train_prompts, "--seed", 0, "--render", layout.work / "data" / "real-images",
            "--out", layout.real_csv]))
        stages.append(Stage("real-encode", "data", "ladd.synth", [
            "--model", layout.teacher(protocol.centre, protocol), "--images", layout.real_csv, "--out",
            layout.data(real), "--batch-size", protocol.synth_batch]))
    return stages


# --- training and benchmarks ------------------------------------------------------------------------------------------

def train_arguments(arm: Arm, protocol: Protocol, layout: Layout) -> list:
    """One protocol for every arm: only the arm's own knobs differ."""
    return [protocol.train_config, f"teacher={layout.pretrained(arm.teacher_depth, protocol, arm.dpo)}",
            f"student_from={layout.pretrained(arm.student_depth, protocol, arm.dpo)}", f"data={layout.data(arm)}",
            f"out={layout.run(arm)}", f"iterations={protocol.iterations}", f"batch_size={protocol.batch_size}",
            f"seed={arm.seed}", f"renoise.logit_mean={arm.logit_mean}", f"distill.weight={arm.distill_weight}",
            f"checkpoint_every={protocol.checkpoint_every}", "keep_checkpoints=2"]


def train_stages(protocol: Protocol, layout: Layout, arms: list[Arm]) -> list[Stage]:
    return [Stage(f"train-{arm.name}", "train", "ladd.train", train_arguments(arm, protocol, layout)) for arm in arms]


def bench_arguments(run: BenchRun, protocol: Protocol, layout: Layout) -> list:
    argv = ["--model", run.model, "--suite", SUITE, "--samples-per-prompt", protocol.samples_per_prompt,
            "--out", layout.bench(run.label)]
    argv += ["--steps", run.steps] if run.steps else []
    argv += ["--lora", layout.dpo_lora(run.lora)] if run.lora else []
    argv += ["--limit", protocol.eval_limit] if protocol.eval_limit else []
    for key, value in run.tags().items():
        argv += ["--tag", f"{key}={value}"]
    return argv


def bench_key(run: BenchRun) -> str:
    return f"bench-{run.label}"


def bench_stages(protocol: Protocol, layout: Layout, runs: list[BenchRun]) -> list[Stage]:
    return [Stage(bench_key(run), "bench", "bench.run", bench_arguments(run, protocol, layout)) for run in runs]


# --- the study --------------------------------------------------------------------------------------------------------

def study_batches(db_path: Path) -> int:
    """How many batches `annotate.study create` dealt: one attentive annotator each."""
    from annotate import db

    if not db_path.is_file():
        raise FileNotFoundError(db_path)
    engine = db.make_engine(str(db_path))
    try:
        return int(db.study_comparisons(engine, db.get_study(engine)["id"])["batch"].nunique())
    finally:
        engine.dispose()


def careless_count(batches: int, share: float) -> int:
    """Careless annotators on top of one attentive annotator per batch: `share` of all annotators."""
    return round(batches * share / (1 - share))


def vote_arguments(db_path: Path, protocol: Protocol) -> list:
    batches = study_batches(db_path)
    careless = careless_count(batches, protocol.study_careless)
    return ["--db", db_path, "--oracle", "--annotators", batches + careless, "--careless", careless,
            "--noise", protocol.study_noise, "--seed", 0]


def votes_key(study: str) -> str:
    """The stage after which a study's votes are all in."""
    return f"study-{study}-votes"


def study_stages(name: str, model: BenchRun, baselines: list[BenchRun], protocol: Protocol,
                 layout: Layout) -> list[Stage]:
    """The study of Figs. 9–11 through the real database: the model's run first, then its baselines; votes from
    evaluator-grounded simulated annotators."""
    db_path = layout.study(name)
    runs = [layout.bench(r.label) for r in (model, *baselines)]
    create = ["create", "--runs", *runs, "--suite", SUITE, "--samples-per-prompt", protocol.study_samples,
              "--views", protocol.study_views, "--batch-size", BATCH_SIZE, "--db", db_path, "--name", name]
    return [Stage(f"study-{name}-create", "study", "annotate.study", create),
            Stage(votes_key(name), "study", "annotate.simulate", lambda: vote_arguments(db_path, protocol))]


# --- DPO teachers (Sec. 4.5) --------------------------------------------------------------------------------------

def dpo_train_arguments(source: str, protocol: Protocol, layout: Layout) -> list:
    argv = [protocol.dpo_config, f"model={layout.teacher(protocol.centre, protocol)}",
            f"preferences={layout.dpo(source) / 'pairs.parquet'}", f"out={layout.dpo_run(source)}"]
    return argv + ([f"iterations={protocol.dpo_iterations}"] if protocol.dpo_iterations else [])


def study_pair_stages(protocol: Protocol, layout: Layout) -> list[Stage]:
    """Preference pairs from a study's votes: the centre teacher on training prompts at two guidance scales (a study
    pairs images of one prompt and seed), each prompt shown once per image seed, evaluator-grounded annotators vote,
    and `annotate.preferences` keeps the majorities."""
    folder, teacher = layout.dpo("study"), layout.teacher(protocol.centre, protocol)
    runs = [folder / f"teacher-cfg{scale:g}" for scale in protocol.dpo_study_guidance]
    db_path = folder / "study.db"
    stages = [Stage("dpo-study-prompts", "dpo", "ladd.shapes.prompts",
                    ["--num", protocol.dpo_study_prompts, "--seed", 2, "--out", folder / "prompts.csv"])]
    for scale, run in zip(protocol.dpo_study_guidance, runs):
        stages.append(Stage(f"dpo-study-{run.name}", "dpo", "bench.run", [
            "--model", teacher, "--suite", "custom", "--prompts", folder / "prompts.csv", "--samples-per-prompt",
            protocol.dpo_study_samples, "--guidance", scale, *teacher_steps(protocol), "--no-score",
            "--out", run]))
    create = ["create", "--runs", *runs, "--suite", "custom", "--samples-per-prompt", protocol.dpo_study_samples,
              "--views", protocol.dpo_study_samples, "--batch-size", BATCH_SIZE, "--db", db_path, "--name",
              "dpo-preferences"]
    return stages + [
        Stage("dpo-study-create", "dpo", "annotate.study", create),
        Stage("dpo-study-votes", "dpo", "annotate.simulate", lambda: vote_arguments(db_path, protocol)),
        Stage("dpo-study-pairs", "dpo", "annotate.preferences",
              ["--db", db_path, "--out", folder / "pairs.parquet"])]


def dpo_stages(protocol: Protocol, layout: Layout, sources: list[str]) -> list[Stage]:
    """A DPO teacher per preference source: the pairs (the exact evaluator's, or a study's votes), then `ladd.dpo`."""
    stages = []
    for source in sources:
        if source == "evaluator":
            stages.append(Stage("dpo-evaluator-pairs", "dpo", "ladd.shapes.preferences", [
                "--model", layout.teacher(protocol.centre, protocol), "--prompts", protocol.dpo_prompts,
                "--samples", protocol.dpo_samples, "--batch-size", protocol.synth_batch, *teacher_steps(protocol),
                "--out", layout.dpo(source) / "pairs.parquet"]))
        elif source == "study":
            stages += study_pair_stages(protocol, layout)
        else:
            raise ValueError(f"unknown preference source {source!r}")
        stages.append(Stage(f"dpo-{source}-train", "dpo", "ladd.dpo", dpo_train_arguments(source, protocol, layout)))
    return stages
