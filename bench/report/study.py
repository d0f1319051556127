"""The human-study sections: win rates, Bradley–Terry ratings, per-group win rates, agreement, filters, pairs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from annotate import db
from annotate.db import StudyError
from bench.report import charts
from bench.report import statistics as stats
from bench.report.sections import IMAGES_DIR, Card, Options, Picture, Section

QUESTION_TITLES = charts.QUESTION_TITLES


@dataclass
class Study:
    info: dict
    votes: pd.DataFrame
    systems: pd.DataFrame
    comparisons: pd.DataFrame


def load_study(database: str, name: str | None) -> Study:
    with db.database_errors(database):  # locked, corrupted, unreachable: one line naming the database
        engine = db.make_engine(database)  # opened read-only until it is known to be a study database
        info = db.get_study(engine, name)
        votes = db.export_votes(engine, info["id"])
        if votes.empty:
            raise StudyError(f"study {info['name']!r} has no votes yet (serve annotate/app.py or run "
                             "annotate.simulate)")
        return Study(info, votes, db.study_systems(engine, info["id"]), db.study_comparisons(engine, info["id"]))


PARTI_SUITES = ("parti", "parti128")  # whose categories and challenges are PartiPrompts' own


def votes_per_question(votes: pd.DataFrame) -> str:
    counts = votes["question"].value_counts()
    return " and ".join(f"{int(counts.get(q, 0))} on {QUESTION_TITLES[q].lower()}" for q in QUESTION_TITLES)


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


def human_sections(study: Study, figures: Path, images: Path, options: Options) -> list[Section]:
    votes = study.votes
    kept, removed = stats.apply_filters(votes, options.min_gold_accuracy, options.min_seconds,
                                        options.max_side_share)
    model = study.systems.loc[study.systems["role"] == "model", "name"].iloc[0]
    baselines = study.systems.loc[study.systems["role"] == "baseline", "name"].tolist()
    sections = [Section("Human preference study").text(
        f"Study **{study.info['name']}** on suite `{study.info['suite']}`: model under test **{model}** against "
        f"{', '.join(baselines)}. Votes from {votes['annotator'].nunique()} annotators: "
        f"{votes_per_question(votes)} (each pair is asked both questions); after the quality filters, "
        f"{votes_per_question(kept)} from {kept['annotator'].nunique()} annotators remain. "
        "Intervals are 95% percentile bootstraps over prompts (votes on one prompt are correlated); the binomial "
        "test treats votes as independent, so near the edge the two can disagree.")]
    sections.append(Section("Quality filters").text(
        "Applied in order; each row counts what it removed from what the previous ones left.").table(removed))
    if kept.empty:
        sections.append(Section("Win rates").text("No votes remain after the quality filters."))
        return sections
    battles = stats.to_battles(kept)
    overall = stats.win_rates(battles, model, baselines, n_boot=options.bootstrap, seed=options.seed)
    sections.append(Section("Win rates").text(
        f"Share of votes preferring **{model}** (purple) over each baseline (grey).")
        .table(display_win_rates(overall))
        .figure(charts.win_rate_bars(overall, figures / "win_rates.png")))
    sections.append(bradley_terry_section(battles, figures, options))
    for group in ("category", "challenge"):
        if (kept[group] != "").any():
            sections.append(group_section(battles, model, baselines, group, figures, options,
                                          parti=study.info["suite"] in PARTI_SUITES))
    alpha = stats.agreement(battles)
    sections.append(Section("Inter-annotator agreement").text(
        "Krippendorff's alpha (nominal). A unit is one prompt of one model pair and question; its values are the "
        "winning models chosen by the annotators who saw that prompt (coded by model, not by side). "
        "0 = chance agreement, 1 = perfect.").table(alpha.assign(alpha=alpha["alpha"].round(3))))
    sections.append(pairs_section(study, kept, images, options))
    return sections


def bradley_terry_section(battles: pd.DataFrame, figures: Path, options: Options) -> Section:
    section = Section("Bradley–Terry ratings").text(
        "Unpenalised logistic regression on all pairwise votes, shown as 400·β + 1000 (β in log10 odds, mean "
        f"1000); intervals from {options.bt_bootstrap} refits on prompt-resampled votes.")
    for question, group in battles.groupby("question", sort=True):
        ratings = stats.bootstrap_bradley_terry(group, options.bt_bootstrap, seed=options.seed)
        title = QUESTION_TITLES.get(question, question)
        section.text(f"**{title}**").table(ratings.round(1))
        section.figure(charts.rating_plot(ratings, title, figures / f"bradley_terry_{question}.png"))
    return section


def group_section(battles, model, baselines, group, figures: Path, options: Options, parti: bool) -> Section:
    table = stats.win_rates(battles[battles[group] != ""], model, baselines, by=[group],
                            n_boot=options.bootstrap, seed=options.seed)
    return (Section(f"Win rate per {'Parti ' if parti else ''}{group}").text(
        f"Few votes per {group}: read the intervals before the point estimates. `votes` counts the votes on "
        "the row's question.")
        .table(display_win_rates(table, [group]))
        .figure(charts.grouped_win_rates(table, group, figures / f"win_rates_by_{group}.png")))


def pairs_section(study: Study, kept: pd.DataFrame, images: Path, options: Options) -> Section:
    """A few compared pairs with the votes they got, images copied so the report stands alone."""
    sides = kept.assign(**{f"{side}_{question}": (kept["choice"] == side) & (kept["question"] == question)
                           for side in ("left", "right") for question in QUESTION_TITLES})
    voted = sides.groupby("comparison").agg(prompt=("prompt", "first"), left=("left_system", "first"),
                                            right=("right_system", "first"), left_path=("left_path", "first"),
                                            right_path=("right_path", "first"),
                                            **{column: (column, "sum") for column in sides.columns
                                               if column.startswith(("left_", "right_"))
                                               and column.endswith(tuple(QUESTION_TITLES))})
    chosen = voted.sample(min(options.pairs, len(voted)), random_state=options.seed).sort_index()
    root = Path(options.image_root or study.info["root"])
    cards = []
    for comparison, row in chosen.iterrows():
        pictures = []
        for side in ("left", "right"):
            source = root / row[f"{side}_path"]
            if not source.is_file():
                pictures.append(Picture(None, [f"image not found: {source}"]))
                continue
            target = images / f"pair{comparison}_{side}{source.suffix}"
            shutil.copyfile(source, target)
            counts = [f"{QUESTION_TITLES[q].lower()}: {int(row[f'{side}_{q}'])} vote(s)" for q in QUESTION_TITLES]
            pictures.append(Picture(f"{IMAGES_DIR}/{target.name}", [row[side], *counts]))
        cards.append(Card(row["prompt"], pictures))
    return Section("Sample pairs").cards(cards).text(f"{len(chosen)} pairs shown in index.html.")
