"""Statistics on simulated annotators whose preferences are known."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from bench.report import statistics as P


def population_preference(p_model, spread):
    """E[expit(logit(p) + spread·Z)], Z ~ N(0, 1), by Gauss–Hermite quadrature: the true win rate over prompts."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(weights * expit(logit(p_model) + spread * nodes)) / np.sqrt(2 * np.pi))


def simulate_votes(rng, p_model=0.7, prompts=48, views=4, spread=0.8, annotators=12, model="A", baseline="B"):
    """Votes of a 1v1 study whose prompts are drawn from a population: prompt i is won by the model with
    probability expit(logit(p_model) + spread·Z_i). Returns the votes and the population win rate, the estimand
    that an interval must cover."""
    p = expit(logit(p_model) + rng.normal(0, spread, prompts))
    rows = []
    for i in range(prompts):
        model_wins = rng.random(views) < p[i]
        model_left = rng.random(views) < 0.5
        for v in range(views):
            left, right = (model, baseline) if model_left[v] else (baseline, model)
            rows.append({"prompt_id": f"{i:03d}", "question": "alignment", "annotator": f"a{rng.integers(annotators)}",
                         "left_system": left, "right_system": right,
                         "choice": "left" if model_wins[v] == model_left[v] else "right"})
    return pd.DataFrame(rows), population_preference(p_model, spread)


def test_win_rate_interval_covers_the_truth_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    covered, sims = 0, 300
    for _ in range(sims):
        votes, truth = simulate_votes(rng)
        table = P.win_rates(P.to_battles(votes), "A", ["B"], n_boot=500, seed=int(rng.integers(1 << 30)))
        covered += table["ci_low"].iloc[0] <= truth <= table["ci_high"].iloc[0]
    assert 0.90 <= covered / sims <= 0.99, covered / sims


def test_vote_level_binomial_interval_undercovers_when_prompts_differ():
    """Why the bootstrap is over prompts: treating the 4 votes of a prompt as independent is overconfident."""
    from scipy import stats
    rng = np.random.default_rng(1)
    covered, sims = 0, 300
    for _ in range(sims):
        votes, truth = simulate_votes(rng, spread=2.0)
        wins = int((P.to_battles(votes)["winner_model"] == "A").sum())
        ci = stats.binomtest(wins, len(votes)).proportion_ci(0.95)
        covered += ci.low <= truth <= ci.high
    assert covered / sims < 0.90


def test_win_rate_table_counts_and_binomial_test():
    votes, _ = simulate_votes(np.random.default_rng(2), p_model=0.8, prompts=40)
    table = P.win_rates(P.to_battles(votes), "A", ["B"], n_boot=300)
    row = table.iloc[0]
    assert row["votes"] == 160 and row["prompts"] == 40
    assert row["win_rate"] == pytest.approx(row["wins"] / row["votes"])
    assert row["ci_low"] < row["win_rate"] < row["ci_high"]
    assert row["p_value"] < 1e-6
    assert P.binomial_p(50, 100) == pytest.approx(1.0)
    assert P.binomial_p(60, 100) == pytest.approx(0.0569, abs=1e-3)  # exact test, the notes' edge case


def test_bradley_terry_recovers_ordering_and_scale():
    rng = np.random.default_rng(3)
    truth = {"A": 1150.0, "B": 1050.0, "C": 950.0, "D": 850.0}  # 400·log10-odds scale, mean 1000
    models = list(truth)
    rows = []
    for i in range(6000):
        a, b = rng.choice(models, 2, replace=False)
        p_a = 1 / (1 + 10 ** ((truth[b] - truth[a]) / 400))
        rows.append({"prompt_id": str(i % 200), "left_system": a, "right_system": b,
                     "choice": "left" if rng.random() < p_a else "right", "question": "quality"})
    battles = P.to_battles(pd.DataFrame(rows))
    ratings = P.bradley_terry(battles)
    assert list(ratings.index) == models
    for model, value in truth.items():
        assert ratings[model] == pytest.approx(value, abs=25)
    table = P.bootstrap_bradley_terry(battles, n_boot=100)
    assert (table["ci_low"] < table["rating"]).all() and (table["rating"] < table["ci_high"]).all()
    assert table["model"].tolist() == models


def test_bradley_terry_is_unpenalised():
    """Two models, 80% wins: the rating gap is exactly 400·log10(4); an L2 penalty would shrink it."""
    rows = [{"prompt_id": str(i), "left_system": "A", "right_system": "B", "choice": "left" if i % 5 else "right",
             "question": "q"} for i in range(100)]
    ratings = P.bradley_terry(P.to_battles(pd.DataFrame(rows)))
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * np.log10(4), abs=0.5)
    assert ratings.mean() == pytest.approx(1000)


def test_krippendorff_alpha_reference_example():
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability': 4 coders, 12 units, nominal 0.743."""
    data = {"A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]}
    pairs = pd.DataFrame([(u, v) for values in data.values() for u, v in enumerate(values) if v is not None],
                         columns=["unit", "value"])
    assert P.krippendorff_alpha(pairs["unit"], pairs["value"]) == pytest.approx(0.743, abs=5e-4)


def test_alpha_near_zero_for_random_voters_and_high_when_prompts_decide():
    rng = np.random.default_rng(4)
    random_votes, _ = simulate_votes(rng, p_model=0.5, prompts=300, views=4, spread=0.0)
    alpha_random = P.agreement(P.to_battles(random_votes))["alpha"].iloc[0]
    assert abs(alpha_random) < 0.05
    decided, _ = simulate_votes(rng, p_model=0.5, prompts=300, views=4, spread=4.0)
    assert P.agreement(P.to_battles(decided))["alpha"].iloc[0] > 0.4


def test_alpha_codes_by_model_not_by_side():
    """Annotators who agree on the model but see it on different sides agree perfectly."""
    rows = []
    for prompt in range(20):
        winner = "A" if prompt % 2 else "B"
        for left, right in (("A", "B"), ("B", "A"), ("A", "B")):
            rows.append({"prompt_id": str(prompt), "question": "q", "left_system": left, "right_system": right,
                         "choice": "left" if left == winner else "right"})
    assert P.agreement(P.to_battles(pd.DataFrame(rows)))["alpha"].iloc[0] == pytest.approx(1.0)


def test_filters_remove_planted_careless_annotators():
    rng = np.random.default_rng(5)
    rows, t = [], 1_000_000.0
    kinds = {"good1": "good", "good2": "good", "goldfail": "gold", "rusher": "fast", "lefty": "left"}
    for annotator, kind in kinds.items():
        start = t
        for i in range(30):
            t += 0.3 if kind == "fast" else rng.uniform(2, 6)
            gold = i % 10 == 5
            side = rng.choice(["left", "right"])
            choice = {"left": "left", "gold": ("right" if side == "left" else "left") if gold else side}.get(kind, side)
            rows.append({"annotator": annotator, "created_at": t, "annotator_started_at": start,
                         "is_gold": gold, "gold_side": side if gold else None, "question": "alignment",
                         "choice": choice, "prompt_id": str(i), "left_system": "A", "right_system": "B"})
    votes = pd.DataFrame(rows)
    kept, report = P.apply_filters(votes)
    assert set(kept["annotator"]) == {"good1", "good2"}
    assert not kept["is_gold"].any()
    removed = report.set_index("filter")
    assert removed.loc["failed gold checks", "annotators"] == 1
    assert removed.loc["too fast", "annotators"] == 1
    assert removed.loc["one-sided", "annotators"] == 1
    assert removed["votes"].sum() == len(votes) - len(kept)
