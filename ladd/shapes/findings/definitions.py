"""The findings: their arms, the contrasts that test the paper's claims (fixed before any run), the study's
comparisons, and the tables written from the runs (`<finding>.csv`, `<finding>-contrasts.csv`,
`<finding>-study.csv` under --out, which `python -m bench.report --findings` draws).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from ladd.cli import LaddError
from ladd.shapes.findings import measure
from ladd.shapes.findings.plan import BenchRun, arm_run, bench_key, teacher_run, votes_key
from ladd.shapes.findings.protocol import REAL, Arm, Layout, Protocol
from ladd.shapes.findings.stages import marker_path, shown

STUDY_STEPS = 4  # the students in a study are sampled with 4 steps (Fig. 10)


def at(steps: int) -> str:
    return f"at {steps} step{'s' if steps > 1 else ''}"


@dataclass(frozen=True)
class Contrast:
    """Σ coefficient × metric(run): e.g. (+1, a), (−1, b) is a − b. `expected` is the paper's direction for a
    metric where higher is better (+1: positive, −1: negative, 0: no difference)."""

    name: str
    terms: tuple[tuple[float, str], ...]
    expected: int
    claim: str


@dataclass(frozen=True)
class StudyPlan:
    name: str  # the study database's and its stages' name: one per model measured (a given student gets its own)
    model: BenchRun
    baselines: tuple[BenchRun, ...]
    expected: dict  # (baseline label, question) → the paper's direction of the model's win rate against 50%
    claims: dict  # baseline label → the paper's claim in words


@dataclass(frozen=True)
class Finding:
    name: str
    figure: str
    claim: str
    arms: tuple[Arm, ...]
    runs: tuple[BenchRun, ...]
    contrasts: tuple[Contrast, ...]
    study: StudyPlan | None = None
    dpo_sources: tuple[str, ...] = ()  # DPO teachers to make first (Sec. 4.5)


def difference(name: str, a: BenchRun, b: BenchRun, expected: int, claim: str) -> Contrast:
    return Contrast(name, ((1.0, a.label), (-1.0, b.label)), expected, claim)


def centre_runs(protocol: Protocol, layout: Layout) -> list[BenchRun]:
    """The centre arm with each seed at every step count: in every finding, for the seed spread."""
    return [arm_run(protocol.centre_arm(seed), steps, layout) for seed in protocol.seeds
            for steps in protocol.eval_steps]


def scaling(protocol: Protocol, layout: Layout, student: Path | None = None) -> Finding:
    """Each depth against the centre, one dimension at a time (so each side of the plot stands on its own runs)."""
    arms = [protocol.centre_arm(seed) for seed in protocol.seeds]
    for depth in protocol.depths:
        if depth != protocol.centre:
            arms += [protocol.vary(student_depth=depth), protocol.vary(teacher_depth=depth),
                     protocol.vary(generator_depth=depth)]
    runs = [arm_run(arm, steps, layout) for arm in arms for steps in protocol.eval_steps]
    runs += [teacher_run(protocol, layout, depth) for depth in protocol.depths]  # is a deeper model better at all?
    contrasts = []
    for steps in protocol.eval_steps:
        for depth in sorted(set(protocol.depths) - {protocol.centre}):
            low, high = sorted((depth, protocol.centre))
            effect = {}  # dimension -> (deeper run, shallower run)
            for dimension in ("student_depth", "teacher_depth", "generator_depth"):
                a, b = (arm_run(protocol.vary(**{dimension: d}), steps, layout) for d in (high, low))
                effect[dimension] = (a, b)
                word = dimension.split("_")[0]
                contrasts.append(difference(f"{word} depth {high} − {low}, {at(steps)}", a, b, +1,
                                            f"a deeper {word} gives a better student"))
            (s_high, s_low) = effect["student_depth"]
            for other in ("teacher_depth", "generator_depth"):
                o_high, o_low = effect[other]
                word = other.split("_")[0]
                contrasts.append(Contrast(
                    f"student effect − {word} effect ({high} − {low}), {at(steps)}",
                    ((1.0, s_high.label), (-1.0, s_low.label), (-1.0, o_high.label), (1.0, o_low.label)), +1,
                    f"student depth matters more than {word} depth"))
    centre = arm_run(protocol.centre_arm(), STUDY_STEPS, layout)
    students = tuple(arm_run(protocol.vary(student_depth=d), STUDY_STEPS, layout)
                     for d in protocol.depths if d != protocol.centre)
    expected = {(s.label, q): (1 if s.arm.student_depth < protocol.centre else -1)
                for s in students for q in ("alignment", "quality")}
    claims = {s.label: f"a student of depth {s.arm.student_depth} is "
                       f"{'worse' if s.arm.student_depth < protocol.centre else 'better'} than the centre's"
              for s in students}
    return Finding("scaling", "Fig. 7", "Student depth matters most; teacher and data-generator depth help less and "
                   "plateau.", tuple(arms), tuple(runs), tuple(contrasts),
                   StudyPlan("scaling", centre, students, expected, claims))


def renoise(protocol: Protocol, layout: Layout, student: Path | None = None) -> Finding:
    arms = [protocol.centre_arm(seed) for seed in protocol.seeds]
    arms += [protocol.vary(logit_mean=m) for m in protocol.logit_means if m != protocol.centre_logit_mean]
    runs = [arm_run(arm, steps, layout) for arm in arms for steps in protocol.eval_steps]
    contrasts = []
    for steps in protocol.eval_steps:
        centre = arm_run(protocol.centre_arm(), steps, layout)
        for m in protocol.logit_means:
            if m != protocol.centre_logit_mean:
                other = arm_run(protocol.vary(logit_mean=m), steps, layout)
                side = "low-noise bias loses global coherence" if m < protocol.centre_logit_mean else \
                    "excessively high noise loses detail"
                contrasts.append(difference(f"m={protocol.centre_logit_mean:g} − m={m:g}, {at(steps)}", centre,
                                            other, +1, f"m = 1 is a solid choice: {side}"))
    return Finding("renoise", "Fig. 4", "t̂ ~ logit-normal(1, 1) is a solid choice: biased to low noise loses "
                   "coherence, to very high noise loses detail.", tuple(arms), tuple(runs), tuple(contrasts))


def data(protocol: Protocol, layout: Layout, student: Path | None = None) -> Finding:
    w = protocol.distill_weight
    arms = [protocol.centre_arm(seed) for seed in protocol.seeds]
    arms += [protocol.vary(distill_weight=w), protocol.vary(data=REAL), protocol.vary(data=REAL, distill_weight=w)]
    runs = [arm_run(arm, steps, layout) for arm in arms for steps in protocol.eval_steps]
    contrasts = []
    for steps in protocol.eval_steps:
        synth, real = arm_run(protocol.centre_arm(), steps, layout), arm_run(protocol.vary(data=REAL), steps, layout)
        synth_d = arm_run(protocol.vary(distill_weight=w), steps, layout)
        real_d = arm_run(protocol.vary(data=REAL, distill_weight=w), steps, layout)
        contrasts += [difference(f"synthetic − real, {at(steps)}", synth, real, +1,
                                 "synthetic data outperforms real data"),
                      difference(f"real: with − without L_distill, {at(steps)}", real_d, real, +1,
                                 "L_distill helps training on real data"),
                      difference(f"synthetic: with − without L_distill, {at(steps)}", synth_d, synth, 0,
                                 "L_distill brings no advantage on synthetic data")]
    return Finding("data", "Fig. 5", "Synthetic data beats real data; L_distill helps real data only.",
                   tuple(arms), tuple(runs), tuple(contrasts))


def student_label(folder: Path) -> str:
    """A given student's name in run labels: `student-` and its folder (the training run's for `<run>/pipeline`),
    never an arm's label."""
    folder = folder.resolve()
    return "student-" + (folder.parent.name if folder.name == "pipeline" else folder.name)


def steps(protocol: Protocol, layout: Layout, student: Path | None = None) -> Finding:
    """1 vs 4 steps of the centre student (or of a given student folder), with the teacher as reference."""
    if student is None:
        arms = tuple(protocol.centre_arm(seed) for seed in protocol.seeds)
        runs = centre_runs(protocol, layout)
        one, four = (arm_run(protocol.centre_arm(), s, layout) for s in (1, 4))
    else:
        arms, label = (), student_label(Path(student))
        one, four = (BenchRun(f"{label}-{s}step", Path(student), s) for s in (1, 4))
        runs = [one, four]
    study_name = "steps" if student is None else f"steps-{four.label.removesuffix('-4step')}"
    teacher = teacher_run(protocol, layout)
    runs = [*runs, teacher]
    contrasts = (difference("4 steps − 1 step", four, one, +1, "four steps improve on one"),)
    expected = {(teacher.label, "alignment"): -1, (teacher.label, "quality"): 0,
                (one.label, "alignment"): 1, (one.label, "quality"): 1}
    claims = {teacher.label: "at 4 steps, the teacher's image quality; prompt alignment slightly lower (Fig. 10)",
              one.label: "4 steps are preferred over 1 step (Figs. 9, 11)"}
    return Finding("steps", "Fig. 11", "Four steps of the same student clearly improve on one.", arms, tuple(runs),
                   contrasts, StudyPlan(study_name, four, (teacher, one), expected, claims))


def dpo(protocol: Protocol, layout: Layout, student: Path | None = None) -> Finding:
    """Sec. 4.5 / Fig. 8: DPO teachers (one per preference source), LADD from the first one's DPO teacher (student
    initialisation, teacher and data generator), and its LoRA reapplied to the students; the study at one step, as
    the paper's 56% against the initial LADD student."""
    chain = protocol.dpo_sources[0]
    centre, dpo_arm = protocol.centre_arm(), protocol.vary(dpo=chain)
    # its own arm first: another finding may be training the centre's meanwhile
    arms = (dpo_arm, *(protocol.centre_arm(seed) for seed in protocol.seeds))
    teacher = teacher_run(protocol, layout)
    dpo_teachers = [BenchRun(f"{teacher.label}-dpo-{source}", layout.dpo_teacher(source), None)
                    for source in protocol.dpo_sources]
    runs = [teacher, *dpo_teachers, *centre_runs(protocol, layout)]
    contrasts = [difference(f"DPO teacher ({source}) − teacher", run, teacher, +1,
                            "DPO fine-tuning improves the teacher (the premise of Sec. 4.5)")
                 for source, run in zip(protocol.dpo_sources, dpo_teachers)]
    for steps in protocol.eval_steps:
        ladd, dpo_ladd = arm_run(centre, steps, layout), arm_run(dpo_arm, steps, layout)
        with_lora = [arm_run(centre, steps, layout, lora=source) for source in protocol.dpo_sources]
        dpo_ladd_lora = arm_run(dpo_arm, steps, layout, lora=chain)
        runs += [*with_lora, dpo_ladd, dpo_ladd_lora]
        contrasts += [difference(f"LADD + LoRA ({source}) − LADD, {at(steps)}", run, ladd, +1,
                                 "reapplying the DPO-LoRA improves a LADD student")
                      for source, run in zip(protocol.dpo_sources, with_lora)]
        contrasts += [
            difference(f"DPO-LADD − LADD, {at(steps)}", dpo_ladd, ladd, +1,
                       "the DPO teacher as initialisation, teacher and generator gives a better student"),
            difference(f"DPO-LADD + LoRA − DPO-LADD, {at(steps)}", dpo_ladd_lora, dpo_ladd, +1,
                       "reapplying the original DPO-LoRA improves the DPO-LADD student further"),
            difference(f"DPO-LADD + LoRA − LADD, {at(steps)}", dpo_ladd_lora, ladd, +1,
                       "the final model beats the initial LADD student")]
    one = min(protocol.eval_steps)
    model = arm_run(dpo_arm, one, layout, lora=chain)
    baselines = (arm_run(centre, one, layout), arm_run(dpo_arm, one, layout))
    expected = {(b.label, q): 1 for b in baselines for q in ("alignment", "quality")}
    claims = {baselines[0].label: "DPO-LADD + LoRA wins 56% against the initial LADD student at one step",
              baselines[1].label: "reapplying the DPO-LoRA improves the DPO-LADD student"}
    return Finding("dpo", "Fig. 8", "DPO on the teacher, LADD from the DPO teacher and the DPO-LoRA reapplied give a "
                   "better student than plain LADD.", arms, tuple(runs), tuple(contrasts),
                   StudyPlan("dpo", model, baselines, expected, claims), tuple(protocol.dpo_sources))


FINDINGS = {"scaling": scaling, "renoise": renoise, "data": data, "steps": steps, "dpo": dpo}


# --- tables --------------------------------------------------------------------------------------------------------

def measure_runs(finding: Finding, protocol: Protocol, layout: Layout, clip) -> tuple[dict, dict]:
    """Every run's metrics on the same prompt resamples: label → metric → (1 + n_boot,) values; and counts."""
    tables = {run.label: measure.prompt_table(layout.bench(run.label), clip=clip, cache=layout.features(run.label))
              for run in finding.runs}
    prompts = measure.aligned(tables)
    weights = measure.resample_weights(len(prompts), protocol.n_boot, seed=0)
    values = {label: table.resampled(weights) for label, table in tables.items()}
    sizes = {label: (len(table.prompts), int(table.counts.sum())) for label, table in tables.items()}
    return values, sizes


def metrics_table(finding: Finding, protocol: Protocol, values: dict, sizes: dict, kind: str) -> pd.DataFrame:
    rows = []
    for run in finding.runs:
        settings = asdict(run.arm) if run.arm else {}
        for metric, resamples in values[run.label].items():
            estimate, low, high = measure.interval(resamples)
            rows.append({"finding": finding.name, "run": run.label, "model": shown(run.model),
                         "steps": run.steps if run.steps else "default", "metric": metric, "estimate": estimate,
                         "ci_low": low, "ci_high": high, "prompts": sizes[run.label][0],
                         "images": sizes[run.label][1], **settings, "lora": run.lora,
                         "iterations": protocol.iterations if run.arm else None, "protocol": kind})
    return pd.DataFrame(rows)


def seed_spread(protocol: Protocol, values: dict, layout: Layout, metric: str, steps: int) -> float:
    """How far apart the centre's two seeds are on a metric (0 when only one seed was run)."""
    labels = [arm_run(protocol.centre_arm(seed), steps, layout).label for seed in protocol.seeds]
    found = [values[label][metric][0] for label in labels if label in values and metric in values[label]]
    return float(max(found) - min(found)) if len(found) > 1 else 0.0


def contrast_steps(contrast: Contrast, finding: Finding) -> int | None:
    steps = {run.steps for run in finding.runs if run.label in {label for _, label in contrast.terms}}
    return steps.pop() if len(steps) == 1 else None


def contrasts_table(finding: Finding, protocol: Protocol, layout: Layout, values: dict) -> pd.DataFrame:
    rows = []
    for contrast in finding.contrasts:
        metrics = set.intersection(*(set(values[label]) for _, label in contrast.terms))
        for metric in sorted(metrics):
            resamples = sum(coef * values[label][metric] for coef, label in contrast.terms)
            estimate, low, high = measure.interval(resamples)
            expected = contrast.expected if measure.HIGHER_IS_BETTER[metric] else -contrast.expected
            steps = contrast_steps(contrast, finding)
            spread = seed_spread(protocol, values, layout, metric, steps) if steps else 0.0
            rows.append({"finding": finding.name, "contrast": contrast.name, "metric": metric,
                         "estimate": estimate, "ci_low": low, "ci_high": high, "expected": expected,
                         "seed_spread": spread, "verdict": measure.verdict(estimate, low, high, expected, spread),
                         "claim": contrast.claim, "terms": " ".join(f"{c:+g}·{label}" for c, label in contrast.terms)})
    return pd.DataFrame(rows)


def study_table(finding: Finding, protocol: Protocol, layout: Layout) -> pd.DataFrame:
    """Win rates of the study's model against each baseline, with the report's intervals and filters, beside the
    exact-evaluator truth (noiseless, and attenuated by the simulated annotators' noise)."""
    from annotate import db
    from annotate.simulate import OracleJudge, oracle_truth
    from bench.report import statistics as stats

    engine = db.make_engine(str(layout.study(finding.study.name)))
    try:
        study = db.get_study(engine)
        systems = db.study_systems(engine, study["id"])
        label = {name: Path(folder).name for name, folder in zip(systems["name"], systems["run_dir"])}
        votes = db.export_votes(engine, study["id"])
        truth = oracle_truth(engine, study, OracleJudge(study["root"]), protocol.study_noise)
    finally:
        engine.dispose()
    kept, removed = stats.apply_filters(votes)
    model = systems.loc[systems["role"] == "model", "name"].iloc[0]
    baselines = systems.loc[systems["role"] == "baseline", "name"].tolist()
    if kept.empty:  # every annotator filtered out (e.g. failed gold checks): no win rate to report
        nan = float("nan")
        rates = truth[["model", "baseline", "question"]].assign(votes=0, wins=0, prompts=0, win_rate=nan,
                                                                ci_low=nan, ci_high=nan, p_value=nan)
    else:
        rates = stats.win_rates(stats.to_battles(kept), model, baselines, n_boot=protocol.n_boot, seed=0)
    table = rates.merge(truth, on=["model", "baseline", "question"], how="left")
    table["model"], table["baseline"] = table["model"].map(label), table["baseline"].map(label)
    table["truth_in_ci"] = (table["ci_low"] <= table["expected"]) & (table["expected"] <= table["ci_high"])
    table["paper_expected"] = [finding.study.expected[(b, q)] for b, q in zip(table["baseline"], table["question"])]
    table["paper_claim"] = table["baseline"].map(finding.study.claims)
    table["verdict"] = [measure.verdict(r - 0.5, lo - 0.5, hi - 0.5, e) for r, lo, hi, e in
                        zip(table["win_rate"], table["ci_low"], table["ci_high"], table["paper_expected"])]
    table["truth_verdict"] = [measure.verdict(t - 0.5, t - 0.5, t - 0.5, e) for t, e in
                              zip(table["truth"], table["paper_expected"])]
    table["annotators_kept"] = kept["annotator"].nunique()
    table["annotators_removed"] = int(removed["annotators"].sum())
    table["noise"], table["finding"] = protocol.study_noise, finding.name
    return table.drop(columns=["p_value"])


def benchmarked_so_far(finding: Finding, layout: Layout) -> Finding:
    """The finding restricted to the runs whose benchmark stage is done: contrasts over those runs only, the study
    only once its votes are in. Run alone (`--stage table`), the tables report where a long finding stands."""
    runs = tuple(r for r in finding.runs if marker_path(layout.work, bench_key(r)).is_file())
    kept = {r.label for r in runs}
    left_out = [r.label for r in finding.runs if r.label not in kept]
    if left_out:
        print(f"# {finding.name}: tables of the runs benchmarked so far; not yet: {', '.join(left_out)}")
    study = finding.study
    if study is not None and not marker_path(layout.work, votes_key(study.name)).is_file():
        study = None
    return replace(finding, runs=runs, study=study,
                   contrasts=tuple(c for c in finding.contrasts if {label for _, label in c.terms} <= kept))


def write_tables(finding: Finding, protocol: Protocol, layout: Layout, out: Path, kind: str) -> list[Path]:
    from bench.backbones import shapes_clip

    finding = benchmarked_so_far(finding, layout)
    if not finding.runs:
        raise LaddError(f"{finding.name}: no run is benchmarked yet (see --plan)")
    out.mkdir(parents=True, exist_ok=True)
    values, sizes = measure_runs(finding, protocol, layout, shapes_clip().load())
    written = {out / f"{finding.name}.csv": metrics_table(finding, protocol, values, sizes, kind),
               out / f"{finding.name}-contrasts.csv": contrasts_table(finding, protocol, layout, values)}
    if finding.study is not None:
        written[out / f"{finding.name}-study.csv"] = study_table(finding, protocol, layout)
    for path, frame in written.items():
        frame.to_csv(path, index=False, float_format="%.6g")
        print(f"wrote {path}")
    return list(written)
