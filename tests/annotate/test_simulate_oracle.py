"""Evaluator-grounded simulated annotators (`annotate.simulate --oracle`) on hand-made shapes pairs whose answers
are known: a rendering of the prompt against a rendering of a one-attribute change, two correct renderings (a tie
for alignment), a missing image; and the content-blind simulator's per-baseline preferences and closed-form truth."""

import os

import numpy as np
import pandas as pd
import pytest

from annotate import db, simulate
from annotate.study import create_study
from bench.report import statistics as stats
from bench.runfolder import image_path, read_runs, write_run
from bench.seeding import sample_seed
from ladd.shapes.grammar import one_attribute_changes, parse_prompt, scene_to_prompt
from ladd.shapes.render import render_prompt

PROMPTS = ["a red circle", "two blue squares", "a large green triangle", "a yellow cross left of a pink circle"]


def wrong_prompt(prompt: str) -> str:
    """The prompt with its first one-attribute change (another colour, shape, count, …)."""
    return scene_to_prompt(one_attribute_changes(parse_prompt(prompt))[0])


def shapes_run(out, name: str, draw, samples: int = 2):
    """A shapes run folder whose image for (prompt, sample) is `draw(prompt, seed)`."""
    def images():
        for i, prompt in enumerate(PROMPTS):
            for k in range(samples):
                seed = sample_seed(0, "shapes", f"{i:03d}", k)
                yield draw(prompt, seed), {
                    "suite": "shapes", "prompt_id": f"{i:03d}", "prompt": prompt, "category": "", "challenge": "",
                    "sample_index": k, "seed": seed, "model": name, "steps": 4, "guidance": 0.0, "width": 64,
                    "height": 64, "path": image_path("shapes", f"{i:03d}", k), "seconds_per_batch": 0.01}
    return write_run(out, images(), {"model": name, "suite": ["shapes"], "samples_per_prompt": samples, "steps": 4})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return {"good": shapes_run(root / "good", "good", render_prompt),
            "wrong": shapes_run(root / "wrong", "wrong", lambda p, s: render_prompt(wrong_prompt(p), s)),
            "other": shapes_run(root / "other", "other", lambda p, s: render_prompt(p, s + 1))}


def make_study(path, model, *baselines, gold=0):
    engine = db.make_engine(str(path), must_exist=False)
    model_run, *baseline_runs = read_runs([model, *baselines])
    create_study(engine, "oracle", model_run, baseline_runs, "shapes", samples_per_prompt=2, views=2,
                 batch_size=40, gold_per_batch=gold, seed=0)
    return engine, db.get_study(engine)


def test_alignment_prefers_the_image_passing_more_checks(runs, tmp_path):
    engine, study = make_study(tmp_path / "s.db", runs["good"], runs["wrong"])
    judge = simulate.OracleJudge(study["root"])
    for item in db.study_comparisons(engine, study["id"]).to_dict("records"):
        good_side = "left" if "good" in item["left_path"] else "right"
        assert judge.preferred(item, "alignment") == good_side
        assert judge.preferred(item, "quality") == good_side  # the rendering itself: cosine 1 to the reference
        assert judge.checks(item[f"{good_side}_path"], item["prompt"]) > judge.checks(
            item[f"{simulate.other_side(good_side)}_path"], item["prompt"])
    assert simulate.simulate_oracle(engine, study, annotators=1, noise=0.0, seed=0) == 2 * 8
    votes = stats.to_battles(db.export_votes(engine, study["id"]))
    assert (votes["winner_model"] == "good-4step").all()
    truth = simulate.oracle_truth(engine, study, judge, noise=0.2).set_index("question")
    assert truth.loc["alignment", "truth"] == 1.0 and truth.loc["alignment", "model_better"] == 8
    assert truth.loc["alignment", "expected"] == pytest.approx(0.9)  # 0.5 + (1 - 0.2)(1 - 0.5)


def test_equally_correct_images_tie_on_alignment_and_are_split_at_random(runs, tmp_path):
    engine, study = make_study(tmp_path / "s.db", runs["good"], runs["other"])
    judge = simulate.OracleJudge(study["root"])
    items = db.study_comparisons(engine, study["id"]).to_dict("records")
    assert all(judge.preferred(item, "alignment") is None for item in items)
    truth = simulate.oracle_truth(engine, study, judge).set_index("question")
    assert truth.loc["alignment", "truth"] == 0.5 and truth.loc["alignment", "ties"] == 8
    # quality: the reference is drawn with the good run's seed, so its image is never the farther one (another
    # layout of the same scene is often within the just-noticeable difference: a tie)
    assert truth.loc["quality", "baseline_better"] == 0 and truth.loc["quality", "model_better"] > 0
    simulate.simulate_oracle(engine, study, annotators=6, noise=0.0, seed=3, judge=judge)
    alignment = stats.to_battles(db.export_votes(engine, study["id"])).query("question == 'alignment'")
    assert 0 < (alignment["winner_model"] == "good-4step").mean() < 1  # ties go either way


def test_noise_and_careless_annotators(runs, tmp_path):
    assert simulate.noisy_choice("left", 0.0, np.random.default_rng(0)) == "left"
    picks = [simulate.noisy_choice("left", 1.0, np.random.default_rng(i)) for i in range(40)]
    assert {"left", "right"} == set(picks)
    levels = [simulate.annotator_noise(0.1, np.random.default_rng(i)) for i in range(200)]
    assert min(levels) >= 0 and max(levels) <= 0.2 and np.mean(levels) == pytest.approx(0.1, abs=0.02)
    engine, study = make_study(tmp_path / "s.db", runs["good"], runs["wrong"], gold=1)
    simulate.simulate_oracle(engine, study, annotators=4, careless=2, noise=0.0, seed=1, start=1e9)
    votes = db.export_votes(engine, study["id"])
    kept, _ = stats.apply_filters(votes)
    assert set(kept["annotator"]) == {"oracle000", "oracle001"}  # the careless two are too fast
    assert (stats.to_battles(kept)["winner_model"] == "good-4step").all()
    gold = votes[votes["is_gold"] & (votes["question"] == "alignment") & votes["annotator"].isin(kept["annotator"])]
    assert (gold["choice"] == gold["gold_side"]).all()  # the prompt's own rendering passes more checks


def test_a_pair_that_cannot_be_shown_gets_no_vote(runs, tmp_path):
    engine, study = make_study(tmp_path / "s.db", runs["good"], runs["wrong"])
    first = db.study_comparisons(engine, study["id"]).iloc[0]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    missing = study["root"] + "/" + first["left_path"]
    (moved / "kept.png").write_bytes(open(missing, "rb").read())
    os.remove(missing)
    try:
        n = simulate.simulate_oracle(engine, study, annotators=1, noise=0.0, seed=0)
        voted = set(db.export_votes(engine, study["id"])["comparison"])
        shared = (db.study_comparisons(engine, study["id"])[["left_path", "right_path"]] == first["left_path"]).any(axis=1)
        assert n == 2 * int((~shared).sum()) and not voted & set(
            db.study_comparisons(engine, study["id"]).loc[shared, "id"])
    finally:
        (moved / "kept.png").replace(missing)


def test_oracle_command(runs, tmp_path, cli):
    make_study(tmp_path / "s.db", runs["good"], runs["wrong"])
    code, out, _ = cli(simulate, "--db", tmp_path / "s.db", "--oracle", "--annotators", 2, "--careless", 1)
    assert code == 0 and "evaluator-grounded" in out
    code, _, err = cli(simulate, "--db", tmp_path / "s.db", "--oracle", "--noise", 0.7)
    assert code == 2 and "--noise must be between 0 and 0.5" in err


def test_content_blind_preferences_per_baseline_and_their_truth(runs, tmp_path):
    engine, study = make_study(tmp_path / "s.db", runs["good"], runs["wrong"], runs["other"])
    simulate.simulate(engine, study, annotators=40, prefer_first=[0.95, 0.05], prompt_spread=0.0, seed=0)
    battles = stats.to_battles(db.export_votes(engine, study["id"]))
    rates = stats.win_rates(battles, "good-4step", ["wrong-4step", "other-4step"], n_boot=100).groupby("baseline")[
        "win_rate"].mean()
    assert rates["wrong-4step"] > 0.85 and rates["other-4step"] < 0.15
    with pytest.raises(db.StudyError, match="2 baselines"):
        simulate.simulate(engine, study, annotators=1, prefer_first=[0.6, 0.6, 0.6])
    assert simulate.true_win_rate(0.7, 0.0) == pytest.approx(0.7)
    # a prompt spread pulls the population rate towards 1/2 (Monte Carlo check of the quadrature)
    draws = simulate.preference(0.8, 0.0) and pd.Series(
        [simulate.preference(0.8, s) for s in np.random.default_rng(0).normal(0, 1.5, 200_000)]).mean()
    assert simulate.true_win_rate(0.8, 1.5) == pytest.approx(draws, abs=2e-3) and draws < 0.8
