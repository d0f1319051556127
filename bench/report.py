"""Render a report from a human preference study and/or run folders.

    python -m bench.report --study results/study.db --runs results/* --out results/report/
    python -m bench.report --runs results/*  --out results/report/      (metrics only)
    python -m bench.report --study results/study.db --out results/report/ (human study only)

Human study: win rate of the model under test against each baseline, per question (prompt alignment, image
quality), with 95% intervals from a bootstrap over prompts and an exact binomial test; Bradley–Terry ratings with
bootstrap intervals; the same per Parti category and challenge; Krippendorff's alpha; what each annotator-quality
filter removed; sample pairs. Runs: metric tables per suite, CLIP score per category, a scaling plot (runs tagged
student_depth / teacher_depth / generator_depth), an editing trade-off plot (runs tagged image_guidance) and an
inpainting FID/LPIPS table, when such runs exist.

Writes index.html (charts, tables, sample images) and summary.md into --out. Inputs are checked before anything is
written, and the report is assembled in a temporary folder first, so a failed run never damages an existing
report. Paths given to --runs that exist but are not run folders (e.g. the study database in `results/*`) are
skipped with a note; a path that does not exist is an error.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from annotate import db
from annotate.db import StudyError
from bench.runfolder import Run, RunFolderError, is_run_folder, read_runs
from bench import charts, preference

QUESTION_TITLES = charts.QUESTION_TITLES


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # ("text", str) | ("table", DataFrame) | ("figure", path) | ("html", str)

    def text(self, value: str):
        self.blocks.append(("text", value))
        return self

    def table(self, frame: pd.DataFrame):
        self.blocks.append(("table", frame))
        return self

    def figure(self, path: Path):
        self.blocks.append(("figure", path))
        return self


@dataclass
class Study:
    info: dict
    votes: pd.DataFrame
    systems: pd.DataFrame
    comparisons: pd.DataFrame


# --- inputs -----------------------------------------------------------------------------------------------------

def load_study(database: str, name: str | None) -> Study:
    engine = db.make_engine(database)
    info = db.get_study(engine, name)
    votes = db.export_votes(engine, info["id"])
    if votes.empty:
        raise StudyError(f"study {info['name']!r} has no votes yet (serve annotate/app.py or run annotate.simulate)")
    return Study(info, votes, db.study_systems(engine, info["id"]), db.study_comparisons(engine, info["id"]))


def split_run_paths(paths: list[str], out: Path) -> tuple[list[Path], list[Path]]:
    """(run folders, other existing paths to skip); a path that does not exist is an error."""
    runs, skipped = [], []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise RunFolderError(f"run folder not found: {path}")
        if path.resolve() == out.resolve():
            continue
        (runs if is_run_folder(path) else skipped).append(path)
    return runs, skipped


# --- formatting -------------------------------------------------------------------------------------------------

def percent_interval(rate: float, low: float, high: float) -> str:
    return f"{rate:.0%} [{low:.0%}, {high:.0%}]" if np.isfinite(rate) else "–"


def p_text(p: float) -> str:
    return "–" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def display_win_rates(table: pd.DataFrame, extra: list[str] = ()) -> pd.DataFrame:
    shown = table.assign(
        question=table["question"].map(QUESTION_TITLES),
        **{"win rate [95% CI]": [percent_interval(r, lo, hi) for r, lo, hi
                                in zip(table["win_rate"], table["ci_low"], table["ci_high"])],
           "binomial p": table["p_value"].map(p_text)})
    return shown[["question", *extra, "model", "baseline", "votes", "prompts", "win rate [95% CI]", "binomial p"]]


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if np.isfinite(value) else "–"
        return str(value).replace("|", "\\|")
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


# --- human study sections -------------------------------------------------------------------------------------

def human_sections(study: Study, figures: Path, assets: Path, args) -> list[Section]:
    votes = study.votes
    kept, removed = preference.apply_filters(votes, args.min_gold_accuracy, args.min_seconds, args.max_side_share)
    model = study.systems.loc[study.systems["role"] == "model", "name"].iloc[0]
    baselines = study.systems.loc[study.systems["role"] == "baseline", "name"].tolist()
    sections = [Section("Human preference study").text(
        f"Study **{study.info['name']}** on suite `{study.info['suite']}`: model under test **{model}** against "
        f"{', '.join(baselines)}. {len(votes)} votes from {votes['annotator'].nunique()} annotators; "
        f"{len(kept)} votes from {kept['annotator'].nunique()} annotators remain after the quality filters. "
        "Intervals are 95% percentile bootstraps over prompts (votes on one prompt are correlated); the binomial "
        "test treats votes as independent, so near the edge the two can disagree.")]
    sections.append(Section("Quality filters").text(
        "Applied in order; each row counts what it removed from what the previous ones left.").table(removed))
    if kept.empty:
        sections.append(Section("Win rates").text("No votes remain after the quality filters."))
        return sections
    battles = preference.to_battles(kept)
    overall = preference.win_rates(battles, model, baselines, n_boot=args.bootstrap, seed=args.seed)
    sections.append(Section("Win rates").text(
        f"Share of votes preferring **{model}** (purple) over each baseline (grey).")
        .table(display_win_rates(overall))
        .figure(charts.win_rate_bars(overall, figures / "win_rates.png")))
    sections.append(bradley_terry_section(battles, figures, args))
    for group in ("category", "challenge"):
        if (kept[group] != "").any():
            sections.append(group_section(battles, model, baselines, group, figures, args))
    alpha = preference.agreement(battles)
    sections.append(Section("Inter-annotator agreement").text(
        "Krippendorff's alpha (nominal). A unit is one prompt of one model pair and question; its values are the "
        "winning models chosen by the annotators who saw that prompt (coded by model, not by side). "
        "0 = chance agreement, 1 = perfect.").table(alpha.assign(alpha=alpha["alpha"].round(3))))
    sections.append(pairs_section(study, kept, assets, args))
    return sections


def bradley_terry_section(battles: pd.DataFrame, figures: Path, args) -> Section:
    section = Section("Bradley–Terry ratings").text(
        "Unpenalised logistic regression on all pairwise votes, shown as 400·β + 1000 (β in log10 odds, mean "
        f"1000); intervals from {args.bt_bootstrap} refits on prompt-resampled votes.")
    for question, group in battles.groupby("question", sort=True):
        ratings = preference.bootstrap_bradley_terry(group, args.bt_bootstrap, seed=args.seed)
        title = QUESTION_TITLES.get(question, question)
        section.text(f"**{title}**").table(ratings.round(1))
        section.figure(charts.rating_plot(ratings, title, figures / f"bradley_terry_{question}.png"))
    return section


def group_section(battles, model, baselines, group, figures: Path, args) -> Section:
    table = preference.win_rates(battles[battles[group] != ""], model, baselines, by=[group],
                                 n_boot=args.bootstrap, seed=args.seed)
    return (Section(f"Win rate per Parti {group}").text(
        f"Few votes per {group}: read the intervals before the point estimates.")
        .table(display_win_rates(table, [group]))
        .figure(charts.grouped_win_rates(table, group, figures / f"win_rates_by_{group}.png")))


def pairs_section(study: Study, kept: pd.DataFrame, assets: Path, args) -> Section:
    """A few compared pairs with the votes they got, images copied so the report stands alone."""
    section = Section("Sample pairs")
    voted = kept.groupby("comparison").agg(prompt=("prompt", "first"), left=("left_system", "first"),
                                           right=("right_system", "first"), left_path=("left_path", "first"),
                                           right_path=("right_path", "first"),
                                           left_votes=("choice", lambda c: int((c == "left").sum())),
                                           right_votes=("choice", lambda c: int((c == "right").sum())))
    chosen = voted.sample(min(args.pairs, len(voted)), random_state=args.seed).sort_index()
    root = Path(args.image_root or study.info["root"])
    cards = []
    for comparison, row in chosen.iterrows():
        images = []
        for side in ("left", "right"):
            source = root / row[f"{side}_path"]
            if not source.is_file():
                images.append(f"<div class='missing'>image not found: {html.escape(str(source))}</div>")
                continue
            target = assets / f"pair{comparison}_{side}{source.suffix}"
            shutil.copyfile(source, target)
            images.append(f"<figure><img src='pairs/{target.name}'><figcaption>{html.escape(row[side])}<br>"
                          f"{row[f'{side}_votes']} vote(s)</figcaption></figure>")
        cards.append(f"<div class='pair'><p>{html.escape(row['prompt'])}</p>{''.join(images)}</div>")
    section.blocks.append(("html", "\n".join(cards)))
    section.text(f"{len(chosen)} pairs shown in index.html.")
    return section


# --- run sections ----------------------------------------------------------------------------------------------

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
    tables = {}
    suites = sorted({s for r in runs for s, v in r.scores.items() if isinstance(v, dict) and v.get("per_category")})
    for suite in suites:
        columns = {}
        for run in runs:
            per_category = (run.scores.get(suite) or {}).get("per_category") or {}
            values = {c: m[clip_key(m)] for c, m in per_category.items() if isinstance(m, dict) and clip_key(m)}
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


def editing_points(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        if "image_guidance" not in run.tags:
            continue
        for suite, values in run.scores.items():
            metrics = scalar_metrics(values if isinstance(values, dict) else {})
            image = [k for k in metrics if "image_sim" in k.lower()]
            direction = [k for k in metrics if "direction_sim" in k.lower()]
            if image and direction:
                rows.append({"suite": suite, "model": Path(str(run.config.get("model", run.name))).name,
                             "run": run.name, "image_guidance": float(run.tags["image_guidance"]),
                             "image_similarity": metrics[image[0]], "direction_similarity": metrics[direction[0]]})
    return pd.DataFrame(rows)


def inpainting_table(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        for suite, values in run.scores.items():
            if "inpaint" not in suite or not isinstance(values, dict):
                continue
            picked = {k: v for k, v in scalar_metrics(values).items() if "fid" in k.lower() or "lpips" in k.lower()}
            rows.append({"run": run.name, "suite": suite, "masks": "all", **picked})
            for policy, metrics in (values.get("per_category") or {}).items():
                picked = {k: v for k, v in scalar_metrics(metrics).items()
                          if "fid" in k.lower() or "lpips" in k.lower()}
                rows.append({"run": run.name, "suite": suite, "masks": policy, **picked})
    return pd.DataFrame(rows)


def run_sections(runs: list[Run], figures: Path, assets: Path, args) -> list[Section]:
    sections = []
    listing = pd.DataFrame([{"run": r.name, "folder": str(r.dir), "images": len(r.manifest),
                             "suites": ", ".join(sorted(r.manifest["suite"].unique())),
                             "tags": ", ".join(f"{k}={v}" for k, v in r.tags.items())} for r in runs])
    sections.append(Section("Runs").table(listing))
    tables = metric_tables(runs)
    if tables:
        metrics = Section("Metrics per suite")
        for suite, table in tables.items():
            metrics.text(f"**{suite}**").table(table)
        sections.append(metrics)
    clip = clip_by_category(runs)
    if clip:
        section = Section("CLIP score per category")
        for suite, table in clip.items():
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
            "CLIP direction similarity against CLIP image similarity across image-guidance strengths.")
            .table(rows.drop(columns="suite").sort_values(["model", "image_guidance"]))
            .figure(charts.editing_tradeoff(rows, figures / f"editing_{suite}.png")))
    inpainting = inpainting_table(runs)
    if not inpainting.empty:
        sections.append(Section("Inpainting").text("FID and LPIPS per run and mask policy.").table(inpainting))
    sections.append(samples_section(runs, assets, args))
    return sections


def samples_section(runs: list[Run], assets: Path, args) -> Section:
    """The same (suite, prompt, sample) from every run that has it, side by side."""
    section = Section("Sample images")
    keys = ["suite", "prompt_id", "sample_index"]
    common = runs[0].manifest[keys + ["prompt"]]
    for run in runs[1:]:
        common = common.merge(run.manifest[keys], on=keys)
    if common.empty:
        return section.text("The runs share no (suite, prompt, sample).")
    chosen = common[common["sample_index"] == common["sample_index"].min()]
    chosen = chosen.sample(min(args.pairs, len(chosen)), random_state=args.seed).sort_values(keys)
    cards = []
    for row in chosen.itertuples():
        figures = []
        for i, run in enumerate(runs):
            match = run.manifest[(run.manifest["suite"] == row.suite) & (run.manifest["prompt_id"] == row.prompt_id)
                                 & (run.manifest["sample_index"] == row.sample_index)]
            source = run.dir / match["path"].iloc[0]
            if source.is_file():
                target = assets / f"run{i}_{row.suite}_{row.prompt_id}_{row.sample_index}{source.suffix}"
                shutil.copyfile(source, target)
                figures.append(f"<figure><img src='pairs/{target.name}'><figcaption>{html.escape(run.name)}"
                               "</figcaption></figure>")
        cards.append(f"<div class='pair'><p>{html.escape(row.prompt)}</p>{''.join(figures)}</div>")
    section.blocks.append(("html", "\n".join(cards)))
    return section.text(f"{len(chosen)} prompts shown in index.html.")


# --- output -----------------------------------------------------------------------------------------------------

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}
img.chart{max-width:100%}.pair{display:inline-block;margin:8px;padding:6px;border:1px solid #ddd;vertical-align:top}
.pair p{max-width:420px;font-weight:bold}.pair figure{display:inline-block;margin:4px;text-align:center}
.pair img{width:192px;image-rendering:pixelated}"""


def render_html(sections: list[Section], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for kind, value in section.blocks:
            if kind == "text":
                parts.append(f"<p>{_inline_markdown(value)}</p>")
            elif kind == "table":
                parts.append(value.to_html(index=False, border=0, na_rep="–", float_format=lambda x: f"{x:.4g}"))
            elif kind == "figure":
                parts.append(f"<img class='chart' src='figures/{value.name}'>")
            else:
                parts.append(value)
    return "\n".join(parts + ["</body></html>"])


def _inline_markdown(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def render_markdown(sections: list[Section], title: str) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for kind, value in section.blocks:
            if kind == "text":
                lines += [value, ""]
            elif kind == "table":
                lines += [markdown_table(value), ""]
            elif kind == "figure":
                lines += [f"![{value.stem}](figures/{value.name})", ""]
    return "\n".join(lines)


def publish(staging: Path, out: Path) -> None:
    """Move the finished report into `out`, replacing only the files and folders it writes."""
    out.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(item), str(target))


def build_report(study: Study | None, runs: list[Run], out: Path, args) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        figures, assets = staging / "figures", staging / "pairs"
        figures.mkdir()
        assets.mkdir()
        sections = []
        if study is not None:
            sections += human_sections(study, figures, assets, args)
        if runs:
            sections += run_sections(runs, figures, assets, args)
        title = "LADD evaluation report"
        (staging / "index.html").write_text(render_html(sections, title))
        (staging / "summary.md").write_text(render_markdown(sections, title))
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", help="study database (SQLite file or SQLAlchemy URL)")
    parser.add_argument("--study-name", help="which study, when the database holds several")
    parser.add_argument("--runs", nargs="*", default=[], metavar="RUN", help="run folders (results/* is fine)")
    parser.add_argument("--out", default="results/report", help="output folder")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples for win-rate intervals")
    parser.add_argument("--bt-bootstrap", type=int, default=400, help="refits for Bradley–Terry intervals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=6, help="sample pairs shown in index.html")
    parser.add_argument("--image-root", help="override the study's recorded image root")
    parser.add_argument("--min-gold-accuracy", type=float, default=0.5)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum median seconds per answer")
    parser.add_argument("--max-side-share", type=float, default=0.9, help="share of one side that flags an annotator")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    try:
        if not args.study and not args.runs:
            raise StudyError("nothing to report: give --study, --runs or both")
        run_paths, skipped = split_run_paths(args.runs, out)
        if args.runs and not run_paths and not args.study:
            raise StudyError("none of the --runs paths is a run folder (with manifest.parquet)")
        study = load_study(args.study, args.study_name) if args.study else None
        runs = read_runs(run_paths)
    except (StudyError, RunFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if skipped:
        print(f"note: skipped {len(skipped)} path(s) that are not run folders: "
              + ", ".join(str(p) for p in skipped), file=sys.stderr)
    build_report(study, runs, out, args)
    print(f"wrote {out / 'index.html'} and {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
