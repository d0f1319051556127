"""The paper's findings as report sections: one figure and its tables per finding, drawn from the CSV tables that
`python -m ladd.shapes.findings.<finding>` and `python -m bench.report.coverage` write (committed under
docs/findings/, so the figures can be redrawn without rerunning anything).

    python -m bench.report --findings docs/findings --out results/findings-report

Tables read (each optional; a finding is drawn when its metrics table is there):
  <finding>.csv            run, steps, metric, estimate, ci_low, ci_high and the arm's settings (student_depth, …)
  <finding>-contrasts.csv  contrast, metric, estimate, ci_low, ci_high, expected, seed_spread, verdict, claim
  <finding>-study.csv      model, baseline, question, win_rate, ci_low, ci_high, expected (the oracle's truth), verdict
  coverage.csv             what, level, question, baseline, coverage, coverage_low, coverage_high
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless, as bench.report.charts
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.report.charts import MODEL_COLOUR, QUESTION_TITLES, _save  # noqa: E402
from bench.report.sections import Section  # noqa: E402

FINDINGS = {"steps": "Fig. 11: 1 against 4 steps", "scaling": "Fig. 7: scaling", "renoise": "Fig. 4: renoising "
            "distribution", "data": "Fig. 5: synthetic against real data", "dpo": "Fig. 8: DPO-LoRA"}
METRICS = ("accuracy", "clip_score", "fd_clip")  # the three; check_score stays in the tables
METRIC_TITLES = {"accuracy": "exact accuracy ↑", "clip_score": "CLIP score ↑", "fd_clip": "FD in CLIP space ↓",
                 "check_score": "checks passed ↑"}
STEP_COLOURS = {1: "#e08214", 4: MODEL_COLOUR}
DEPTHS = ("student_depth", "teacher_depth", "generator_depth")
REQUIRED = {"metrics": {"run", "steps", "metric", "estimate", "ci_low", "ci_high"},
            "contrasts": {"contrast", "metric", "estimate", "ci_low", "ci_high", "verdict"},
            "study": {"model", "baseline", "question", "win_rate", "ci_low", "ci_high", "expected", "verdict"},
            "coverage": {"what", "level", "question", "baseline", "coverage", "coverage_low", "coverage_high"}}


# --- reading -----------------------------------------------------------------------------------------------------

def read_table(path: Path, kind: str) -> pd.DataFrame | None:
    """A findings table, or None when absent; a table without the columns its figure needs is an error."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BenchError(f"{path}: not a readable CSV table ({type(error).__name__})") from None
    missing = REQUIRED[kind] - set(frame.columns)
    if missing:
        raise BenchError(f"{path}: not a findings {kind} table (no column {', '.join(sorted(missing))})")
    return frame


def load_findings(folder: str | Path) -> dict[str, dict[str, pd.DataFrame]]:
    """finding → {"metrics", "contrasts", "study"} tables found (plus "coverage" → {"coverage": …})."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"findings folder not found: {folder}")
    found = {}
    for name in FINDINGS:
        tables = {kind: read_table(folder / f"{name}{suffix}.csv", kind) for kind, suffix in
                  (("metrics", ""), ("contrasts", "-contrasts"), ("study", "-study"))}
        if tables["metrics"] is not None:
            found[name] = {kind: table for kind, table in tables.items() if table is not None}
    coverage = read_table(folder / "coverage.csv", "coverage")
    if coverage is not None:
        found["coverage"] = {"coverage": coverage}
    if not found:
        raise BenchError(f"{folder}: no findings tables (<finding>.csv or coverage.csv)")
    return found


# --- the points each figure draws ----------------------------------------------------------------------------------

def run_label(row: pd.Series) -> str:
    """A run's place on the x axis of the steps figure: its label (e.g. student-shapes-turbo-4step, teacher-d4)."""
    return str(row["run"])


def scaling_points(metrics: pd.DataFrame) -> pd.DataFrame:
    """Fig. 7's points: for each depth dimension, the runs whose other two depths are the centre's (the centre is
    the configuration run most often: it carries the seed repeats), first seed only; column `dimension`."""
    table = metrics[metrics["data"].fillna("synthetic") == "synthetic"] if "data" in metrics else metrics
    triples = table.drop_duplicates("run")[list(DEPTHS)].apply(tuple, axis=1)
    centre = dict(zip(DEPTHS, triples.mode().iloc[0]))
    first_seed = table["seed"] == table["seed"].min() if "seed" in table else True
    parts = []
    for dimension in DEPTHS:
        others = [d for d in DEPTHS if d != dimension]
        keep = first_seed & np.logical_and.reduce([table[d] == centre[d] for d in others])
        parts.append(table[keep].assign(dimension=dimension, depth=table.loc[keep, dimension]))
    return pd.concat(parts, ignore_index=True)


def dpo_label(row: pd.Series) -> str:
    """Fig. 8's chain: teacher / DPO teacher (its preference source), LADD / DPO-LADD student, + the LoRA reapplied."""
    if pd.isna(row.get("student_depth")):  # a teacher's run: teacher-d4, teacher-d4-dpo-<source>
        name = str(row["run"])
        return f"DPO teacher\n({name.split('-dpo-')[1]})" if "-dpo-" in name else "teacher"
    label = "DPO-LADD" if isinstance(row.get("dpo"), str) and row["dpo"] else "LADD"
    lora = row.get("lora")
    return label + (f" + LoRA\n({lora})" if isinstance(lora, str) and lora else "")


def data_label(row: pd.Series) -> str:
    return f"{row['data']}\n{'with' if row['distill_weight'] > 0 else 'without'} L_distill"


# --- figures -------------------------------------------------------------------------------------------------------

def interval_points(axis, x, rows: pd.DataFrame, colour: str, label: str, line: bool) -> None:
    axis.errorbar(x, rows["estimate"], yerr=[rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]],
                  fmt="o-" if line else "o", color=colour, capsize=3, label=label)


def panel_points(metrics: pd.DataFrame, x_of) -> tuple[pd.DataFrame, list | None]:
    """The points `metric_panels` draws: the metrics rows with `x` (`x_of(row)`), `position` on the axis (in order
    of first appearance when `x` is a label) and `series` (the step count), one per (metric, series, x); and the
    labels of a categorical axis (None for a numeric one)."""
    rows = metrics.assign(x=[x_of(r) for _, r in metrics.iterrows()], series=metrics["steps"].astype(str))
    rows = rows.drop_duplicates(["metric", "series", "x"])
    if rows["x"].map(lambda v: isinstance(v, str)).any():
        order = list(dict.fromkeys(rows["x"]))
        return rows.assign(position=rows["x"].map(order.index)).sort_values("position"), order
    return rows.assign(position=rows["x"].astype(float)).sort_values("position"), None


def metric_panels(metrics: pd.DataFrame, x_of, x_title: str, path: Path, line: bool = True) -> Path:
    """One panel per metric: estimate with its 95% interval against `x_of(row)`, one series per step count."""
    points, order = panel_points(metrics, x_of)
    shown = [m for m in METRICS if m in set(points["metric"])]
    width = max(4.0, 0.6 * len(order)) if order is not None else 4.0  # room for each label on a categorical axis
    figure, axes = plt.subplots(1, len(shown), figsize=(width * len(shown), 3.4), squeeze=False)
    for axis, metric in zip(axes[0], shown):
        for series, group in points[points["metric"] == metric].groupby("series", sort=True):
            colour = STEP_COLOURS.get(int(series), "grey") if series.isdigit() else "grey"
            interval_points(axis, group["position"], group, colour,
                            f"{series}-step" if series.isdigit() else series, line)
        if order is not None:
            axis.set_xticks(range(len(order)), order, fontsize=7, rotation=30 if len(order) > 4 else 10, ha="right")
        axis.set_xlabel(x_title)
        axis.set_title(METRIC_TITLES.get(metric, metric), fontsize=10)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(figure, path)


def scaling_figure(metrics: pd.DataFrame, path: Path) -> Path:
    """Fig. 7: metric (rows) against student / teacher / data-generator depth (columns), 1 and 4 steps."""
    points = scaling_points(metrics)
    shown = [m for m in METRICS if m in set(points["metric"])]
    figure, axes = plt.subplots(len(shown), len(DEPTHS), figsize=(3.6 * len(DEPTHS), 2.8 * len(shown)),
                                squeeze=False, sharey="row")
    for row, metric in enumerate(shown):
        for column, dimension in enumerate(DEPTHS):
            axis = axes[row][column]
            rows = points[(points["metric"] == metric) & (points["dimension"] == dimension)]
            for steps, group in rows.groupby("steps", sort=True):
                group = group.sort_values("depth")
                interval_points(axis, group["depth"], group, STEP_COLOURS.get(int(steps), "grey"),
                                f"{steps}-step", line=True)
            axis.set_xticks(sorted(rows["depth"].unique()))
            axis.set_xlabel(dimension.replace("_", " "))
            if column == 0:
                axis.set_ylabel(METRIC_TITLES.get(metric, metric))
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(figure, path)


def study_figure(study: pd.DataFrame, path: Path) -> Path:
    """Figs. 9–11 style: the model's win rate against each baseline with its 95% interval, and the oracle's truth
    (what the simulated annotators would give with unlimited votes) as a cross: the two must agree."""
    questions = [q for q in QUESTION_TITLES if q in set(study["question"])]
    baselines = list(dict.fromkeys(study["baseline"]))
    figure, axes = plt.subplots(1, len(questions), figsize=(5 * len(questions), 0.7 * len(baselines) + 1.6),
                                squeeze=False, sharey=True)
    for axis, question in zip(axes[0], questions):
        rows = study[study["question"] == question].set_index("baseline").reindex(baselines)
        y = np.arange(len(baselines))
        axis.errorbar(rows["win_rate"], y, xerr=[rows["win_rate"] - rows["ci_low"], rows["ci_high"] - rows["win_rate"]],
                      fmt="o", color=MODEL_COLOUR, capsize=3, label="measured, 95% CI")
        # Drawn above the measured point: where the two agree, the cross must still show.
        axis.plot(rows["expected"], y, "x", color="black", zorder=3, label="oracle truth")
        axis.axvline(0.5, color="black", linestyle="--", linewidth=0.8)
        axis.set_xlim(0, 1)
        axis.set_yticks(y, [f"vs {b}" for b in baselines], fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel(f"win rate of {rows['model'].iloc[0]}", fontsize=8)
        axis.set_title(QUESTION_TITLES[question])
    axes[0][0].legend(fontsize=8, loc="lower left")
    return _save(figure, path)


def coverage_figure(coverage: pd.DataFrame, path: Path) -> Path:
    """Coverage of the win-rate intervals per (question, baseline) and pooled, with their own 95% intervals, against
    the nominal level (dashed)."""
    rows = coverage[coverage["what"].str.startswith("win-rate interval")]
    levels = sorted(rows["level"].unique(), reverse=True)
    figure, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 0.4 * rows["baseline"].nunique() * 3 + 1.5),
                                squeeze=False)
    for axis, level in zip(axes[0], levels):
        cells = rows[rows["level"] == level].reset_index(drop=True)
        y = np.arange(len(cells))
        axis.errorbar(cells["coverage"], y, xerr=[cells["coverage"] - cells["coverage_low"],
                                                  cells["coverage_high"] - cells["coverage"]],
                      fmt="o", color=MODEL_COLOUR, capsize=3)
        axis.axvline(level, color="black", linestyle="--", linewidth=0.8)
        axis.set_yticks(y, [f"{q} · {b}" for q, b in zip(cells["question"], cells["baseline"])], fontsize=7)
        axis.invert_yaxis()
        axis.set_xlabel("share of studies whose interval covers the truth")
        axis.set_title(f"{level:.0%} intervals")
    return _save(figure, path)


# --- sections ------------------------------------------------------------------------------------------------------

def shown_contrasts(contrasts: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in ("contrast", "metric", "estimate", "ci_low", "ci_high", "seed_spread", "verdict", "claim")
               if c in contrasts]
    return contrasts[contrasts["metric"].isin(METRICS)][columns].reset_index(drop=True)


def shown_study(study: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in ("model", "baseline", "question", "votes", "win_rate", "ci_low", "ci_high", "expected",
                           "truth_in_ci", "paper_claim", "verdict") if c in study]
    return study[columns].rename(columns={"expected": "oracle truth"})


def finding_sections(findings: dict[str, dict[str, pd.DataFrame]], figures: Path) -> list[Section]:
    """A section per finding (`load_findings`' tables): its figure(s), contrasts with verdicts, and study."""
    sections = []
    for name, tables in findings.items():
        if name == "coverage":
            coverage = tables["coverage"]
            section = Section("Findings: do the study's intervals cover the truth?")
            section.text("Simulated studies with a known win probability through the real study pipeline "
                         "(`python -m bench.report.coverage`); coverage with its own 95% interval.")
            section.figure(coverage_figure(coverage, figures / "findings-coverage.png"))
            section.table(coverage[[c for c in ("what", "level", "question", "baseline", "studies", "coverage",
                                                "coverage_low", "coverage_high") if c in coverage]])
            sections.append(section)
            continue
        metrics = tables["metrics"]
        section = Section(f"Findings, {FINDINGS[name]}")
        path = figures / f"findings-{name}.png"
        if name == "scaling":
            section.figure(scaling_figure(metrics, path))
        elif name == "renoise":
            section.figure(metric_panels(metrics[metrics["seed"] == metrics["seed"].min()],
                                         lambda r: r["logit_mean"], "renoising mean m", path))
        elif name == "dpo":
            first_seed = metrics["seed"].isna() | (metrics["seed"] == metrics["seed"].min())
            section.figure(metric_panels(metrics[first_seed], dpo_label, "", path, line=False))
        elif name == "data":
            section.figure(metric_panels(metrics[metrics["seed"] == metrics["seed"].min()], data_label,
                                         "training data", path, line=False))
        else:
            section.figure(metric_panels(metrics, run_label, "", path, line=False))
        section.text("Estimates with 95% intervals from a bootstrap over prompts (every run on the same prompts).")
        if "contrasts" in tables:
            section.table(shown_contrasts(tables["contrasts"]))
        if "study" in tables:
            section.figure(study_figure(tables["study"], figures / f"findings-{name}-study.png"))
            section.table(shown_study(tables["study"]))
        sections.append(section)
    return sections
