"""The run sections: metric tables per suite, CLIP score per category, scaling and editing plots, inpainting, a
reapplied LoRA against the same model without it, sample images side by side. Everything comes from the runs' scores.json, config.json tags and manifests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import charts
from bench.report.sections import IMAGES_DIR, Card, Options, Picture, Section
from bench.runfolder import KEY, Run, lora_label


def scalar_metrics(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def metric_tables(runs: list[Run]) -> dict[str, pd.DataFrame]:
    """Per suite: one row per run, one column per scalar metric in its scores.json."""
    rows = [{"suite": suite, "run": run.name, **scalar_metrics(values)}
            for run in runs for suite, values in run.scores.items() if isinstance(values, dict)]
    frame = pd.DataFrame(rows)
    return {suite: group.drop(columns="suite").dropna(axis=1, how="all").reset_index(drop=True)
            for suite, group in frame.groupby("suite", sort=True)} if rows else {}


def clip_key(metrics) -> str | None:
    keys = [k for k in metrics if "clip_score" in k.lower()]
    return "clip_score" if "clip_score" in keys else (keys[0] if keys else None)


def clip_by_category(runs: list[Run]) -> dict[str, pd.DataFrame]:
    """Per suite: category × run table of the CLIP score."""
    return metric_by_category(runs, clip_key)


def accuracy_by_category(runs: list[Run]) -> dict[str, pd.DataFrame]:
    """Per suite with an exact evaluator (the shapes suites): category × run table of the exact accuracy."""
    return metric_by_category(runs, lambda m: "accuracy" if "accuracy" in m else None)


def metric_by_category(runs: list[Run], key_of) -> dict[str, pd.DataFrame]:
    """Per suite: category × run table of the metric `key_of(category metrics)` names (None: the suite lacks it)."""
    tables = {}
    suites = sorted({s for r in runs for s, v in r.scores.items() if isinstance(v, dict) and v.get("per_category")})
    for suite in suites:
        columns = {}
        for run in runs:
            per_category = (run.scores.get(suite) or {}).get("per_category") or {}
            values = {c: m[key_of(m)] for c, m in per_category.items() if isinstance(m, dict) and key_of(m)}
            if values:
                columns[run.name] = pd.Series(values)
        if columns:
            tables[suite] = pd.DataFrame(columns).rename_axis("category").reset_index()
    return tables


def scaling_points(runs: list[Run], suite: str) -> tuple[pd.DataFrame, list[str]]:
    """One point per run and varied dimension: the other depths held at their most common (default) value."""
    rows = []
    for run in runs:
        depths = {d: run.tags[d] for d in charts.DEPTH_TAGS if d in run.tags}
        metrics = scalar_metrics(run.scores.get(suite) or {})
        if depths and metrics:
            rows.append({**depths, **metrics})
    if not rows:
        return pd.DataFrame(), []
    frame = pd.DataFrame(rows)
    dims = [d for d in charts.DEPTH_TAGS if d in frame]
    defaults = {d: frame[d].mode().max() for d in dims}
    metrics = [c for c in frame.columns  # counts such as n_images are bookkeeping, not quality
               if c not in dims and not c.startswith("n_") and frame[c].notna().all()][:4]
    points = []
    for dim in dims:
        held = np.logical_and.reduce([frame[o].isna() | (frame[o] == defaults[o]) for o in dims if o != dim]
                                     or [np.ones(len(frame), bool)])
        varied = frame[held & frame[dim].notna()]
        if varied[dim].nunique() >= 2:
            points.append(varied.assign(dimension=dim, depth=varied[dim]))
    return (pd.concat(points, ignore_index=True) if points else pd.DataFrame()), metrics


EDIT_SWEEPS = (("image_guidance", "image guidance"), ("strength", "SDEdit strength"))
INPAINTING_METRICS = ("accuracy", "fd_clip", "clip_distance", "psnr_outside", "fid", "lpips")


def editing_points(runs: list[Run]) -> pd.DataFrame:
    """One point per editing run (Fig. 13, left): a series per model and what it sweeps (image guidance, SDEdit
    strength; a run sweeping nothing is labelled by its steps), with CLIP image and direction similarity and, on
    the shapes world, exact edit accuracy and preservation."""
    rows = []
    for run in runs:
        model = Path(str(run.config.get("model", run.name))).name
        sweep = next(((tag, words) for tag, words in EDIT_SWEEPS if tag in run.tags), None)
        for suite, values in run.scores.items():
            metrics = scalar_metrics(values if isinstance(values, dict) else {})
            image = [k for k in metrics if "image_sim" in k.lower()]
            direction = [k for k in metrics if "direction_sim" in k.lower()]
            if not (image and direction):
                continue
            if sweep:
                series, value, label = f"{model} ({sweep[1]})", float(run.tags[sweep[0]]), f"{run.tags[sweep[0]]:g}"
            else:
                steps = run.config.get("steps")
                series, value, label = f"{model} (steps)", float(steps or 0), f"{steps} step"
            rows.append({"suite": suite, "series": series, "run": run.name, "value": value, "label": label,
                         "image_similarity": metrics[image[0]], "direction_similarity": metrics[direction[0]],
                         **{k: metrics[k] for k in ("edit_accuracy", "preservation") if k in metrics}})
    return pd.DataFrame(rows)


def inpainting_table(runs: list[Run]) -> pd.DataFrame:
    """Per run and mask policy (Fig. 13, right): the inpainting metrics the run has."""
    rows = []
    for run in runs:
        for suite, values in run.scores.items():
            if "inpaint" not in suite or not isinstance(values, dict):
                continue
            for policy, metrics in [("all", values), *(values.get("per_category") or {}).items()]:
                picked = {k: v for k, v in scalar_metrics(metrics).items() if k in INPAINTING_METRICS}
                rows.append({"run": run.name, "suite": suite, "masks": policy, **picked})
    return pd.DataFrame(rows)


def same_sampling(run: Run) -> tuple:
    """What must match for two runs to differ only by a merged LoRA."""
    config = run.config
    return (config.get("model_source", config.get("model")), config.get("steps"), config.get("guidance"),
            config.get("seed"), tuple(config.get("suite") or ()))


def lora_pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(without, with) for every run with a merged LoRA (tag `lora`, `bench.run --lora`) whose model was also run
    with the same steps, guidance, seed and suites without one."""
    plain = {same_sampling(r): r for r in runs if "lora" not in r.tags}
    return [(plain[same_sampling(r)], r) for r in runs if "lora" in r.tags and same_sampling(r) in plain]


def lora_table(pairs: list[tuple[Run, Run]]) -> pd.DataFrame:
    """One row per pair, suite and metric both runs have: the value without and with the LoRA, and the change."""
    rows = []
    for without, with_lora in pairs:
        for suite, values in with_lora.scores.items():
            before = scalar_metrics(without.scores.get(suite) or {})
            after = scalar_metrics(values if isinstance(values, dict) else {})
            for metric in (m for m in after if m in before and not m.startswith("n_")):
                rows.append({"model": Path(str(without.config.get("model", without.name))).name,
                             "steps": without.config.get("steps"), "lora": lora_label(with_lora.tags["lora"]),
                             "lora_scale": float(with_lora.tags.get("lora_scale", 1.0)), "suite": suite,
                             "metric": metric, "without": before[metric], "with": after[metric],
                             "change": after[metric] - before[metric]})
    return pd.DataFrame(rows)


def paired_cards(pairs: list[tuple[Run, Run]], images: Path, options: Options) -> list[Card]:
    """Fig. 8's samples: the same prompt and seed without and with the LoRA, for a few prompts of each pair."""
    cards = []
    for p, (without, with_lora) in enumerate(pairs):
        common = without.manifest[KEY + ["prompt", "path"]].merge(with_lora.manifest[KEY + ["path"]], on=KEY,
                                                                    suffixes=("", "_lora"))
        common = common[common["sample_index"] == common["sample_index"].min()] if not common.empty else common
        chosen = common.sample(min(options.pairs, len(common)), random_state=options.seed).sort_values(KEY)
        for row in chosen.itertuples():
            pictures = []
            for run, relative, caption in ((without, row.path, "without LoRA"),
                                           (with_lora, row.path_lora, f"with {lora_label(with_lora.tags['lora'])}")):
                source = run.dir / relative
                target = images / f"lora{p}_{caption.split()[0]}_{row.suite}_{row.prompt_id}{source.suffix}"
                if source.is_file():
                    shutil.copyfile(source, target)
                pictures.append(Picture(f"{IMAGES_DIR}/{target.name}" if source.is_file() else None,
                                        [run.name, caption]))
            cards.append(Card(row.prompt, pictures))
    return cards


def run_sections(runs: list[Run], figures: Path, images: Path, options: Options) -> list[Section]:
    sections = []
    listing = pd.DataFrame([{"run": r.name, "folder": str(r.dir), "images": len(r.manifest),
                             "suites": ", ".join(sorted(r.manifest["suite"].unique())),
                             "tags": ", ".join(f"{k}={v}" for k, v in r.tags.items())} for r in runs])
    sections.append(Section("Runs").table(listing))
    for title, tables in (("Metrics per suite", metric_tables(runs)), ("CLIP score per category",
                                                                      clip_by_category(runs)),
                          ("Exact accuracy per category", accuracy_by_category(runs))):
        if tables:
            section = Section(title)
            for suite, table in tables.items():
                section.text(f"**{suite}**").table(table)
            sections.append(section)
    for suite in sorted({s for r in runs if any(d in r.tags for d in charts.DEPTH_TAGS) for s in r.scores}):
        points, metrics = scaling_points(runs, suite)
        if not points.empty and metrics:
            shown = points[["dimension", "depth", *metrics]].sort_values(["dimension", "depth"])
            sections.append(Section(f"Scaling ({suite})").text(
                "One depth varied at a time, the others held at their most common value (Figure 7).")
                .table(shown).figure(charts.scaling_plot(points, metrics, figures / f"scaling_{suite}.png")))
    editing = editing_points(runs)
    for suite, rows in (editing.groupby("suite") if not editing.empty else []):
        sections.append(Section(f"Editing trade-off ({suite})").text(
            "Figure 13, left: CLIP direction similarity against CLIP image similarity (and, on the shapes world, "
            "exact edit accuracy against preservation), one line per model across what it sweeps.")
            .table(rows.drop(columns="suite").sort_values(["series", "value"]))
            .figure(charts.editing_tradeoff(rows, figures / f"editing_{suite}.png")))
    inpainting = inpainting_table(runs)
    if not inpainting.empty:
        sections.append(Section("Inpainting").text("Figure 13, right: the inpainting metrics per run and mask "
                                                   "policy.").table(inpainting))
    pairs = lora_pairs(runs)
    table = lora_table(pairs)
    if not table.empty:
        sections.append(Section("LoRA reapplied").text(
            "Figure 8: each model with the LoRA merged (`bench.run --lora`) against the same model, steps, guidance "
            "and seeds without it.").table(table)
            .figure(charts.lora_effect(table, figures / "lora.png")).cards(paired_cards(pairs, images, options)))
    sections.append(samples_section(runs, images, options))
    return sections


def samples_section(runs: list[Run], images: Path, options: Options) -> Section:
    """The same (suite, prompt, sample) from every run that has it, side by side."""
    section = Section("Sample images")
    common = runs[0].manifest[KEY + ["prompt"]]
    for run in runs[1:]:
        common = common.merge(run.manifest[KEY], on=KEY)
    if common.empty:
        return section.text("The runs share no (suite, prompt, sample).")
    chosen = common[common["sample_index"] == common["sample_index"].min()]
    chosen = chosen.sample(min(options.pairs, len(chosen)), random_state=options.seed).sort_values(KEY)
    cards = []
    for row in chosen.itertuples():
        pictures = []
        for i, run in enumerate(runs):
            match = run.manifest[(run.manifest["suite"] == row.suite) & (run.manifest["prompt_id"] == row.prompt_id)
                                 & (run.manifest["sample_index"] == row.sample_index)]
            source = run.dir / match["path"].iloc[0]
            if source.is_file():
                target = images / f"run{i}_{row.suite}_{row.prompt_id}_{row.sample_index}{source.suffix}"
                shutil.copyfile(source, target)
                pictures.append(Picture(f"{IMAGES_DIR}/{target.name}", [run.name]))
        cards.append(Card(row.prompt, pictures))
    return section.cards(cards).text(f"{len(chosen)} prompts shown in index.html.")
