"""`python -m bench.report.coverage`: do the report's intervals cover the truth? Simulated studies with known answers.

    python -m bench.report.coverage --studies 200 --prompts 128 --views 4 --prefer 0.55,0.65,0.75 \\
        --work results/coverage --out docs/findings/coverage.csv

Each simulated study goes through the real pipeline: fake run folders (a model and one baseline per --prefer
value) → `annotate.study.create_study` (batches, gold checks, sides) → content-blind simulated annotators
(`annotate.simulate.simulate`: one per batch plus --careless careless ones, per-prompt preference shifts of spread
--spread shared by every baseline) → `annotate.db.export_votes` → the report's own statistics
(`bench.report.statistics`: the quality filters, `win_rates`, `bradley_terry`, `bootstrap_bradley_terry`). The
truth is known in closed form: the model beats baseline k in the prompt population with probability
E[expit(logit(p_k) + spread·Z)] (`annotate.simulate.true_win_rate`), which implies Bradley–Terry ratings (the
model's log10 odds against each baseline, centred). Per study, baseline and question it records whether the 95%
interval over prompts covers the true win rate (and a 50% interval, whose coverage must be near 50%: a check that
the measurement can tell intervals apart), whether the Bradley–Terry order is the true order, and whether the
rating intervals cover the true ratings.

The summary (--out, with the per-study rows beside it as `<out stem>-studies.csv`) gives each coverage with its
own 95% interval: Clopper–Pearson per (baseline, question) over independent studies, and for all cells pooled a
bootstrap over studies (the cells of one study share its prompts and are not independent). Studies are independent
(study i is seeded with i): rerunning the command skips the studies already in the work folder's table, so a long
measurement can be stopped and resumed, and --studies can be raised later.

A user can run it at their own study's design (--prompts, --views, --samples-per-prompt, --careless) before
recruiting anyone: that is why it is a command of the report and not a one-off experiment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from annotate import db
from annotate.simulate import simulate, true_win_rate
from annotate.study import create_study
from bench.errors import BenchError
from bench.report import statistics as stats
from bench.runfolder import fake_prompts, read_runs, write_fake_run
from ladd.cli import OneLineParser, run_cli

PROG = "python -m bench.report.coverage"
SUITE = "parti128"
MODEL = "model"
LEVELS = (0.95, 0.5)  # the nominal interval, and a narrow one whose coverage must come out near 50%
BATCH_SIZE = 40


# --- the truth --------------------------------------------------------------------------------------------------

def baseline_name(k: int) -> str:
    return f"baseline{k + 1}"


def true_ratings(truths: dict[str, float]) -> dict[str, float]:
    """Bradley–Terry ratings (400·log10-odds scale, mean 1000) implied by the model's true win rate against each
    baseline: a baseline beaten with probability t sits 400·log10(t / (1 − t)) below the model."""
    beta = {MODEL: 0.0, **{name: -np.log10(t / (1 - t)) for name, t in truths.items()}}
    mean = np.mean(list(beta.values()))
    return {name: stats.RATING_SCALE * (b - mean) + stats.RATING_INIT for name, b in beta.items()}


def true_order(truths: dict[str, float]) -> list[str]:
    """Strongest first: the model, then the baselines it beats least often."""
    ratings = true_ratings(truths)
    return sorted(ratings, key=lambda name: -ratings[name])


# --- intervals of a coverage --------------------------------------------------------------------------------------

def clopper_pearson(covered: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for a coverage measured over `n` independent studies."""
    if n == 0:
        return np.nan, np.nan
    interval = scipy_stats.binomtest(int(covered), int(n)).proportion_ci(level, method="exact")
    return float(interval.low), float(interval.high)


def pooled_coverage_ci(per_study: pd.Series, n_boot: int = 4000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap over studies of a coverage pooled over several correlated cells per study
    (`per_study`: each study's share of covered cells)."""
    values = per_study.to_numpy(float)
    weights = stats.bootstrap_weights(len(values), n_boot, np.random.default_rng(seed))
    means = weights @ values / len(values)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


# --- one simulated study ------------------------------------------------------------------------------------------

def fake_study_runs(folder: Path, prompts: int, samples: int, baselines: int) -> list:
    """The model's and the baselines' run folders (drawn PNGs, 8 px: only their paths and decodability matter),
    written once and reused by every study."""
    runs = [folder / MODEL] + [folder / baseline_name(k) for k in range(baselines)]
    if not all((run / "config.json").is_file() for run in runs):
        shutil.rmtree(folder, ignore_errors=True)
        table = fake_prompts(prompts)
        for run in runs:
            write_fake_run(run, run.name, 1, table, samples, suite=SUITE, size=8)
    return read_runs(runs)


def study_rows(index: int, runs, prefer: list[float], spread: float, views: int, samples: int, careless: int,
               n_boot: int, bt_boot: int, folder: Path) -> list[dict]:
    """Build, vote and analyse study `index`; one row per (baseline, question)."""
    path = folder / f"study-{index:04d}.db"
    path.unlink(missing_ok=True)
    engine = db.make_engine(str(path), must_exist=False)
    try:
        model, *baselines = runs
        summary = create_study(engine, f"coverage-{index}", model, baselines, SUITE, samples, views, BATCH_SIZE,
                               gold_per_batch=2, seed=index)
        study = db.get_study(engine)
        simulate(engine, study, summary["batches"] + careless, prefer, careless, spread, seed=index, start=1e9)
        votes = db.export_votes(engine, study["id"])
    finally:
        engine.dispose()
        path.unlink(missing_ok=True)
    kept, removed = stats.apply_filters(votes)
    battles = stats.to_battles(kept)
    truths = {b.name: true_win_rate(p, spread) for b, p in zip(baselines, prefer)}
    names = [b.name for b in baselines]
    tables = {level: stats.win_rates(battles, model.name, names, n_boot=n_boot, level=level, seed=index)
              .set_index(["question", "baseline"]) for level in LEVELS}
    ratings = true_ratings({n: truths[n] for n in names})
    ratings[model.name] = ratings.pop(MODEL)
    order = true_order(truths)
    order[order.index(MODEL)] = model.name
    rows = []
    for question, group in battles.groupby("question", sort=True):
        bt = stats.bootstrap_bradley_terry(group, n_boot=bt_boot, seed=index).set_index("model")
        order_right = list(bt.index) == order
        rating_covered = all(bt.loc[m, "ci_low"] <= ratings[m] <= bt.loc[m, "ci_high"] for m in bt.index)
        for name in names:
            row = {"study": index, "question": question, "baseline": name,
                   "prefer": prefer[names.index(name)], "truth": truths[name],
                   "careless_removed": int(removed["annotators"].iloc[:3].sum())}
            for level in LEVELS:
                rate, low, high = tables[level].loc[(question, name), ["win_rate", "ci_low", "ci_high"]]
                tag = f"{round(level * 100)}"
                row.update({"win_rate": rate, f"ci{tag}_low": low, f"ci{tag}_high": high,
                            f"covered{tag}": bool(low <= truths[name] <= high)})
            row.update({"votes": int(tables[0.95].loc[(question, name), "votes"]),
                        "prompts": int(tables[0.95].loc[(question, name), "prompts"]),
                        "bt_order_right": order_right, "bt_ratings_covered": rating_covered})
            rows.append(row)
    return rows


# --- the measurement ----------------------------------------------------------------------------------------------

def studies_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def append_rows(path: Path, rows: list[dict]) -> None:
    """Add one study's rows to the table (a kill between studies loses nothing; within one, only that study)."""
    frame = pd.DataFrame(rows)
    frame.to_csv(path, mode="a", header=not path.is_file(), index=False)


def summarise(table: pd.DataFrame, design: dict) -> pd.DataFrame:
    """Coverage per (question, baseline) with Clopper–Pearson intervals, and pooled over all cells with a bootstrap
    over studies; Bradley–Terry order recovery and rating coverage per question."""
    rows = []
    for (question, baseline), cell in table.groupby(["question", "baseline"], sort=True):
        for level in LEVELS:
            tag = f"{round(level * 100)}"
            covered, n = int(cell[f"covered{tag}"].sum()), len(cell)
            low, high = clopper_pearson(covered, n)
            rows.append({"what": "win-rate interval covers the truth", "level": level, "question": question,
                         "baseline": baseline, "truth": cell["truth"].iloc[0],
                         "mean_win_rate": float(cell["win_rate"].mean()), "studies": n, "covered": covered,
                         "coverage": covered / n, "coverage_low": low, "coverage_high": high,
                         "mean_width": float((cell[f"ci{tag}_high"] - cell[f"ci{tag}_low"]).mean())})
    for level in LEVELS:
        tag = f"{round(level * 100)}"
        per_study = table.groupby("study")[f"covered{tag}"].mean()
        low, high = pooled_coverage_ci(per_study)
        rows.append({"what": "win-rate interval covers the truth", "level": level, "question": "all",
                     "baseline": "all", "studies": len(per_study), "covered": int(table[f"covered{tag}"].sum()),
                     "coverage": float(table[f"covered{tag}"].mean()), "coverage_low": low, "coverage_high": high,
                     "mean_width": float((table[f"ci{tag}_high"] - table[f"ci{tag}_low"]).mean())})
    per_question = table.drop_duplicates(["study", "question"])
    for question, cell in per_question.groupby("question", sort=True):
        # all ratings at once: k 95% intervals cover jointly less often than 95% (at least 1 − k·5% by Bonferroni)
        for what, column in (("Bradley–Terry order is the true order", "bt_order_right"),
                             ("Bradley–Terry intervals cover every true rating at once", "bt_ratings_covered")):
            hits, n = int(cell[column].sum()), len(cell)
            low, high = clopper_pearson(hits, n)
            rows.append({"what": what, "level": 0.95 if "intervals" in what else np.nan, "question": question,
                         "baseline": "all", "studies": n, "covered": hits, "coverage": hits / n,
                         "coverage_low": low, "coverage_high": high})
    return pd.DataFrame(rows).assign(**design)


def measure(work: Path, studies: int, prompts: int, samples: int, views: int, prefer: list[float], spread: float,
            careless: int, n_boot: int, bt_boot: int, progress: bool = True) -> pd.DataFrame:
    """Run the studies not yet in `work`'s table and return the table of all of them."""
    design = {"prompts": prompts, "samples": samples, "views": views, "prefer": ",".join(map(str, prefer)),
              "spread": spread, "careless": careless, "n_boot": n_boot}
    work.mkdir(parents=True, exist_ok=True)
    design_file = work / "design.json"
    if design_file.is_file() and json.loads(design_file.read_text()) != design:
        raise BenchError(f"{work} holds studies of another design ({design_file}); pass another --work")
    design_file.write_text(json.dumps(design))
    table_path = work / "studies.csv"
    done = set(studies_table(table_path).get("study", pd.Series(dtype=int)).astype(int))
    runs = fake_study_runs(work / "runs", prompts, samples, len(prefer))
    for index in range(studies):
        if index in done:
            continue
        start = time.time()
        rows = study_rows(index, runs, prefer, spread, views, samples, careless, n_boot, bt_boot, work)
        append_rows(table_path, rows)
        if progress:
            print(f"study {index + 1}/{studies}: {time.time() - start:.1f} s", flush=True)
    table = studies_table(table_path)
    return table[table["study"] < studies].reset_index(drop=True)


def format_summary(summary: pd.DataFrame) -> str:
    shown = summary.assign(coverage=[f"{c:.1%} [{lo:.1%}, {hi:.1%}]" for c, lo, hi in
                                     zip(summary["coverage"], summary["coverage_low"], summary["coverage_high"])])
    columns = ["what", "level", "question", "baseline", "studies", "coverage"]
    columns += ["mean_width"] if "mean_width" in shown else []
    return shown[columns].to_string(index=False, na_rep="")


def parse_probabilities(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated probabilities, got {text!r}")
    if not all(0 < v < 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct probabilities strictly between 0 and 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200, help="simulated studies (default 200)")
    parser.add_argument("--prompts", type=int, default=128, help="prompts per study (default 128, the paper's)")
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--views", type=int, default=4, help="showings of each prompt per model pair and question")
    parser.add_argument("--prefer", type=parse_probabilities, default=[0.55, 0.65, 0.75],
                        help="the model's win probability against each baseline before the prompt shift "
                             "(one baseline per value; default 0.55,0.65,0.75)")
    parser.add_argument("--spread", type=float, default=1.0, help="sd of the per-prompt logit shift (default 1)")
    parser.add_argument("--careless", type=int, default=2, help="careless annotators per study (default 2)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples per win-rate interval")
    parser.add_argument("--bt-bootstrap", type=int, default=200, help="refits per Bradley–Terry interval")
    parser.add_argument("--work", default="results/coverage", help="folder of the per-study table (resumable)")
    parser.add_argument("--out", help="summary CSV (and <stem>-studies.csv beside it)")
    args = parser.parse_args(argv)
    for name in ("studies", "prompts", "samples_per_prompt", "views", "bootstrap", "bt_bootstrap"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if args.spread < 0 or args.careless < 0:
        raise BenchError("--spread and --careless must not be negative")
    table = measure(Path(args.work), args.studies, args.prompts, args.samples_per_prompt, args.views, args.prefer,
                    args.spread, args.careless, args.bootstrap, args.bt_bootstrap)
    design = {"prompts": args.prompts, "samples": args.samples_per_prompt, "views": args.views,
              "spread": args.spread, "careless": args.careless}
    summary = summarise(table, design)
    print(format_summary(summary))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        summary.to_csv(out, index=False, float_format="%.6g")
        table.to_csv(out.with_name(f"{out.stem}-studies.csv"), index=False, float_format="%.6g")
        print(f"wrote {out} and {out.with_name(f'{out.stem}-studies.csv')}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
