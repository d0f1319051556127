"""Report charts (matplotlib, no display). Each function draws one figure from a tidy table and saves it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report runs headless; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

MODEL_COLOUR, BASELINE_COLOUR = "#7b3fa0", "#c9c9c9"  # the paper's preference plots: ours in colour, others grey
QUESTION_TITLES = {"alignment": "Prompt alignment", "quality": "Image quality"}
DEPTH_TAGS = {"student_depth": "student depth", "teacher_depth": "teacher depth",
              "generator_depth": "data-generator depth"}


def _save(figure, path: Path) -> Path:
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")  # keeps legends placed outside the axes
    plt.close(figure)
    return path


def win_rate_bars(table: pd.DataFrame, path: Path) -> Path:
    """Figures 9–10 style: per question, one horizontal bar per baseline split at the model's win rate, with the
    95% interval drawn at the split and the 50% line dashed."""
    questions = [q for q in QUESTION_TITLES if q in set(table["question"])]
    baselines = list(dict.fromkeys(table["baseline"]))
    figure, axes = plt.subplots(1, len(questions), figsize=(5.5 * len(questions), 0.6 * len(baselines) + 1.6),
                                squeeze=False, sharey=True, layout="constrained")
    for axis, question in zip(axes[0], questions):
        rows = table[table["question"] == question].set_index("baseline").reindex(baselines)
        y = range(len(baselines))
        rate = rows["win_rate"].to_numpy() * 100
        axis.barh(y, rate, color=MODEL_COLOUR, label=rows["model"].iloc[0])
        axis.barh(y, 100 - rate, left=rate, color=BASELINE_COLOUR, label="baseline")
        axis.errorbar(rate, y, xerr=[rate - rows["ci_low"] * 100, rows["ci_high"] * 100 - rate], fmt="none",
                      ecolor="black", capsize=3, linewidth=1)
        for yi, r in zip(y, rate):
            axis.text(2, yi, f"{r:.0f}%", va="center", color="white", fontweight="bold")
            axis.text(98, yi, f"{100 - r:.0f}%", va="center", ha="right")
        axis.axvline(50, color="black", linestyle="--", linewidth=0.8)
        axis.set_xlim(0, 100)
        axis.set_yticks(list(y), [f"vs {b}" for b in baselines])
        axis.invert_yaxis()
        axis.set_xlabel("share of votes (%)")
        axis.set_title(QUESTION_TITLES[question])
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False, fontsize=8)
    return _save(figure, path)


def grouped_win_rates(table: pd.DataFrame, group: str, path: Path) -> Path:
    """Win rate per category (or challenge) with intervals, one panel per question and baseline."""
    panels = list(table.groupby(["baseline", "question"], sort=True))
    groups = sorted(table[group].unique())
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 0.35 * len(groups) + 1.5),
                                squeeze=False, sharey=True)
    for axis, ((baseline, question), rows) in zip(axes[0], panels):
        rows = rows.set_index(group).reindex(groups)
        y = range(len(groups))
        axis.errorbar(rows["win_rate"], y, xerr=[rows["win_rate"] - rows["ci_low"], rows["ci_high"] - rows["win_rate"]],
                      fmt="o", color=MODEL_COLOUR, capsize=2)
        axis.axvline(0.5, color="black", linestyle="--", linewidth=0.8)
        axis.set_xlim(0, 1)
        axis.set_yticks(list(y), groups)
        axis.invert_yaxis()
        axis.set_title(f"{QUESTION_TITLES.get(question, question)}\nvs {baseline}", fontsize=9)
        axis.set_xlabel("win rate of the model")
    return _save(figure, path)


def rating_plot(ratings: pd.DataFrame, title: str, path: Path) -> Path:
    """Bradley–Terry ratings with their bootstrap intervals."""
    figure, axis = plt.subplots(figsize=(6, 0.5 * len(ratings) + 1.2))
    y = range(len(ratings))
    axis.errorbar(ratings["rating"], y, xerr=[ratings["rating"] - ratings["ci_low"],
                                              ratings["ci_high"] - ratings["rating"]],
                  fmt="o", color=MODEL_COLOUR, capsize=3)
    axis.set_yticks(list(y), ratings["model"])
    axis.invert_yaxis()
    axis.set_xlabel("rating (400·β + 1000)")
    axis.set_title(title)
    return _save(figure, path)


def scaling_plot(points: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """Figure 7 style: metric against student / teacher / data-generator depth, one dimension varied per panel.

    `points` has columns dimension (a DEPTH_TAGS key), depth and one column per metric."""
    dimensions = [d for d in DEPTH_TAGS if d in set(points["dimension"])]
    # one y scale per metric row, so the panels show which dimension moves the metric most (the paper's point)
    figure, axes = plt.subplots(len(metrics), len(dimensions), figsize=(3.6 * len(dimensions), 2.8 * len(metrics)),
                                squeeze=False, sharey="row")
    for row, metric in enumerate(metrics):
        for column, dimension in enumerate(dimensions):
            axis = axes[row][column]
            rows = points[points["dimension"] == dimension].sort_values("depth")
            axis.plot(rows["depth"], rows[metric], "o-", color=MODEL_COLOUR)
            axis.set_xticks(sorted(rows["depth"].unique()))
            axis.set_xlabel(DEPTH_TAGS[dimension])
            if column == 0:
                axis.set_ylabel(metric)
            axis.grid(alpha=0.3)
    return _save(figure, path)


def editing_tradeoff(points: pd.DataFrame, path: Path) -> Path:
    """InstructPix2Pix-style trade-off (the paper's Fig. 13, left): CLIP direction similarity (x) against CLIP image
    similarity (y), one line per series, each point labelled with its sweep value; beside it, where the runs have
    them, the shapes world's exact edit accuracy (x) against preservation (y)."""
    exact = {"edit_accuracy", "preservation"} <= set(points.columns) and points["edit_accuracy"].notna().any()
    panels = [("direction_similarity", "image_similarity", "CLIP direction similarity", "CLIP image similarity")]
    if exact:
        panels.append(("edit_accuracy", "preservation", "exact edit accuracy", "preservation"))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for axis, (x, y, x_label, y_label) in zip(axes[0], panels):
        for series, rows in points.groupby("series", sort=True):
            rows = rows.dropna(subset=[x, y]).sort_values("value")
            axis.plot(rows[x], rows[y], "o-", label=series)
            for r in rows.itertuples():
                axis.annotate(r.label, (getattr(r, x), getattr(r, y)), fontsize=7, textcoords="offset points",
                              xytext=(4, 4))
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(figure, path)


def lora_effect(table: pd.DataFrame, path: Path) -> Path:
    """The paper's Fig. 8 as numbers: per metric, each model at each step count without and with the reapplied
    LoRA, side by side."""
    metrics = list(dict.fromkeys(table["metric"]))[:4]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        rows = table[table["metric"] == metric].reset_index(drop=True)
        labels = [f"{r.model}\n{r.steps} step(s)" + ("" if r.lora_scale == 1 else f"\nLoRA x{r.lora_scale:g}")
                  for r in rows.itertuples()]
        positions = range(len(rows))
        axis.bar([p - 0.2 for p in positions], rows["without"], 0.4, color=BASELINE_COLOUR, label="without LoRA")
        axis.bar([p + 0.2 for p in positions], rows["with"], 0.4, color=MODEL_COLOUR, label="with LoRA")
        axis.set_xticks(list(positions), labels, fontsize=7)
        axis.set_title(metric)
        axis.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8)
    return _save(figure, path)
