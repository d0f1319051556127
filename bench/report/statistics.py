"""Statistics of pairwise human preference, as small pure functions over a DataFrame of votes.

The votes frame is `annotate.db.export_votes` (one row per vote: annotator, comparison, question, choice,
left_system, right_system, prompt_id, category, challenge, is_gold, gold_side, created_at, …). `to_battles`
turns it into FastChat-style battles (`model_a` = left, `model_b` = right, `winner`), plus the winner's name.

Votes on one prompt are correlated (the same prompt is easy or hard for a model), so every interval here is a
bootstrap over prompts, not over votes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import log_expit

RATING_SCALE, RATING_BASE, RATING_INIT = 400.0, 10.0, 1000.0  # FastChat's Elo-style display scale


# --- votes -> battles -----------------------------------------------------------------------------------------

def to_battles(votes: pd.DataFrame) -> pd.DataFrame:
    """Code each vote by model, not by side: sides are randomised, the winner's name is what matters."""
    left_won = votes["choice"] == "left"
    return votes.assign(
        model_a=votes["left_system"], model_b=votes["right_system"],
        winner=np.where(left_won, "model_a", "model_b"),
        winner_model=np.where(left_won, votes["left_system"], votes["right_system"]),
        loser_model=np.where(left_won, votes["right_system"], votes["left_system"]))


def pair_battles(battles: pd.DataFrame, model: str, baseline: str) -> pd.DataFrame:
    pair = {model, baseline}
    keep = [{a, b} == pair for a, b in zip(battles["model_a"], battles["model_b"])]
    return battles[keep]


# --- win rate with a prompt-level bootstrap -------------------------------------------------------------------

def wins_per_prompt(battles: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per prompt: votes won by `model` and votes cast (battles already restricted to one pair)."""
    won = (battles["winner_model"] == model).astype(int)
    return (battles.assign(won=won).groupby("prompt_id")["won"].agg(wins="sum", n="size").reset_index())


def bootstrap_weights(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_units) counts: how often each unit (prompt) is drawn in each resample."""
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot)


def win_rate_ci(per_prompt: pd.DataFrame, n_boot: int = 2000, level: float = 0.95,
                rng: np.random.Generator | None = None) -> tuple[float, float, float]:
    """Pooled win rate and its percentile bootstrap interval, resampling prompts."""
    wins, n = per_prompt["wins"].to_numpy(float), per_prompt["n"].to_numpy(float)
    if n.sum() == 0:
        return np.nan, np.nan, np.nan
    weights = bootstrap_weights(len(n), n_boot, rng or np.random.default_rng(0))
    rates = (weights @ wins) / np.maximum(weights @ n, 1)
    tail = (1 - level) / 2
    return wins.sum() / n.sum(), float(np.quantile(rates, tail)), float(np.quantile(rates, 1 - tail))


def binomial_p(wins: int, n: int) -> float:
    """Exact two-sided binomial test of 'no preference' (p = 0.5), votes taken as independent."""
    return float(stats.binomtest(int(wins), int(n), 0.5).pvalue) if n else np.nan


def win_rates(battles: pd.DataFrame, model: str, baselines: list[str], by: list[str] | None = None,
              n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Win rate of `model` against each baseline per question (and per `by` group, e.g. category)."""
    rng = np.random.default_rng(seed)
    keys = ["question"] + list(by or [])
    rows = []
    for baseline in baselines:
        pair = pair_battles(battles, model, baseline)
        for key, group in pair.groupby(keys, sort=True):
            per_prompt = wins_per_prompt(group, model)
            rate, low, high = win_rate_ci(per_prompt, n_boot, level, rng)
            wins, n = int(per_prompt["wins"].sum()), int(per_prompt["n"].sum())
            rows.append({**dict(zip(keys, key)), "model": model, "baseline": baseline, "votes": n, "wins": wins,
                         "prompts": len(per_prompt), "win_rate": rate, "ci_low": low, "ci_high": high,
                         "p_value": binomial_p(wins, n)})
    columns = keys + ["model", "baseline", "votes", "wins", "prompts", "win_rate", "ci_low", "ci_high", "p_value"]
    return pd.DataFrame(rows, columns=columns)


# --- Bradley–Terry ----------------------------------------------------------------------------------------------

def pairwise_counts(battles: pd.DataFrame) -> pd.DataFrame:
    """Wins per ordered (winner, loser) pair."""
    return battles.groupby(["winner_model", "loser_model"]).size().rename("count").reset_index()


def fit_bradley_terry(winners: np.ndarray, losers: np.ndarray, counts: np.ndarray, n_models: int) -> np.ndarray:
    """Maximum-likelihood strengths (log10 odds), unpenalised, centred to mean 0.

    Logistic regression without penalty: sklearn's default L2 would shrink the ratings towards each other.
    """
    scale = np.log(RATING_BASE)

    def loss(free: np.ndarray) -> tuple[float, np.ndarray]:
        beta = np.concatenate([[0.0], free])  # the first model anchors the (otherwise free) offset
        margin = scale * (beta[winners] - beta[losers])
        value = -np.sum(counts * log_expit(margin))
        slope = -counts * scale * (1 - np.exp(log_expit(margin)))
        grad = np.bincount(winners, slope, n_models) - np.bincount(losers, slope, n_models)
        return value, grad[1:]

    result = optimize.minimize(loss, np.zeros(n_models - 1), jac=True, method="L-BFGS-B")
    beta = np.concatenate([[0.0], result.x])
    return beta - beta.mean()


def bradley_terry(battles: pd.DataFrame) -> pd.Series:
    """Ratings on the FastChat scale, 400·β + 1000 (β in log10 odds), mean 1000."""
    models = sorted(set(battles["model_a"]) | set(battles["model_b"]))
    index = {m: i for i, m in enumerate(models)}
    counts = pairwise_counts(battles)
    beta = fit_bradley_terry(counts["winner_model"].map(index).to_numpy(),
                             counts["loser_model"].map(index).to_numpy(),
                             counts["count"].to_numpy(float), len(models))
    return pd.Series(RATING_SCALE * beta + RATING_INIT, index=models, name="rating").sort_values(ascending=False)


def bootstrap_bradley_terry(battles: pd.DataFrame, n_boot: int = 400, level: float = 0.95,
                            seed: int = 0) -> pd.DataFrame:
    """Ratings with percentile intervals from refits on prompt-resampled battles."""
    models = sorted(set(battles["model_a"]) | set(battles["model_b"]))
    index = {m: i for i, m in enumerate(models)}
    per_prompt = (battles.groupby(["prompt_id", "winner_model", "loser_model"]).size()
                  .unstack(["winner_model", "loser_model"], fill_value=0))
    winners = np.array([index[w] for w, _ in per_prompt.columns])
    losers = np.array([index[l] for _, l in per_prompt.columns])
    weights = bootstrap_weights(len(per_prompt), n_boot, np.random.default_rng(seed))
    resampled = weights @ per_prompt.to_numpy(float)
    samples = np.array([fit_bradley_terry(winners, losers, c, len(models)) for c in resampled])
    samples = RATING_SCALE * samples + RATING_INIT
    tail = (1 - level) / 2
    table = pd.DataFrame({"model": models, "rating": bradley_terry(battles).reindex(models).to_numpy(),
                          "ci_low": np.quantile(samples, tail, axis=0),
                          "ci_high": np.quantile(samples, 1 - tail, axis=0)})
    return table.sort_values("rating", ascending=False, ignore_index=True)


# --- agreement ----------------------------------------------------------------------------------------------------

def krippendorff_alpha(units: pd.Series, values: pd.Series) -> float:
    """Krippendorff's alpha for nominal data; units judged by fewer than two coders are not pairable."""
    counts = pd.crosstab(units, values).to_numpy(float)  # n_uc: coders in unit u who chose value c
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    if len(m) == 0:
        return np.nan
    weight = 1.0 / (m - 1)
    coincidence = (counts * weight[:, None]).T @ counts - np.diag(weight @ counts)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    expected = n * n - np.sum(n_c ** 2)
    if expected == 0:
        return np.nan  # every value the same: agreement is not measurable
    return float(1 - (n - 1) * (n - np.trace(coincidence)) / expected)


def agreement(battles: pd.DataFrame) -> pd.DataFrame:
    """Alpha per model pair and question. A unit is (pair, prompt, question); its value is the winning model."""
    pair = [" vs ".join(sorted((a, b))) for a, b in zip(battles["model_a"], battles["model_b"])]
    framed = battles.assign(pair=pair)
    rows = []
    for (pair_name, question), group in framed.groupby(["pair", "question"], sort=True):
        rows.append({"pair": pair_name, "question": question,
                     "alpha": krippendorff_alpha(group["prompt_id"], group["winner_model"]),
                     "units": int((group.groupby("prompt_id").size() >= 2).sum()), "votes": len(group)})
    return pd.DataFrame(rows, columns=["pair", "question", "alpha", "units", "votes"])


# --- quality filters ----------------------------------------------------------------------------------------------

def response_seconds(votes: pd.DataFrame) -> pd.Series:
    """Seconds each vote took: since the annotator's previous vote, or since registering for the first."""
    ordered = votes.sort_values(["annotator", "created_at"])
    previous = ordered.groupby("annotator")["created_at"].shift()
    return (ordered["created_at"] - previous.fillna(ordered["annotator_started_at"])).reindex(votes.index)


def gold_failures(votes: pd.DataFrame, min_accuracy: float) -> set:
    """Annotators whose prompt-alignment answers on gold checks are right less often than `min_accuracy`."""
    gold = votes[votes["is_gold"] & (votes["question"] == "alignment")]
    accuracy = (gold["choice"] == gold["gold_side"]).groupby(gold["annotator"]).mean()
    return set(accuracy[accuracy < min_accuracy].index)


def too_fast(votes: pd.DataFrame, min_median_seconds: float) -> set:
    median = response_seconds(votes).groupby(votes["annotator"]).median()
    return set(median[median < min_median_seconds].index)


def one_sided(votes: pd.DataFrame, max_share: float, min_votes: int) -> set:
    """Annotators who (nearly) always pick the same side although sides are randomised."""
    share = votes.groupby("annotator")["choice"].agg(lambda c: c.value_counts(normalize=True).max())
    size = votes.groupby("annotator").size()
    return set(share[(share >= max_share) & (size >= min_votes)].index)


def apply_filters(votes: pd.DataFrame, min_gold_accuracy: float = 0.5, min_median_seconds: float = 1.0,
                  max_side_share: float = 0.9, min_votes_for_side: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop careless annotators (in this order) and the gold checks; return kept votes and what each removed."""
    filters = [("failed gold checks", f"alignment accuracy on gold < {min_gold_accuracy:g}",
                lambda v: gold_failures(v, min_gold_accuracy)),
               ("too fast", f"median seconds per answer < {min_median_seconds:g}",
                lambda v: too_fast(v, min_median_seconds)),
               ("one-sided", f"≥ {max_side_share:.0%} of ≥ {min_votes_for_side} answers on one side",
                lambda v: one_sided(v, max_side_share, min_votes_for_side))]
    kept, report = votes, []
    for name, rule, flag in filters:
        flagged = flag(kept)
        removed = kept["annotator"].isin(flagged)
        report.append({"filter": name, "rule": rule, "annotators": len(flagged), "votes": int(removed.sum())})
        kept = kept[~removed]
    report.append({"filter": "gold checks themselves", "rule": "attention checks are not preference data",
                   "annotators": 0, "votes": int(kept["is_gold"].sum())})
    kept = kept[~kept["is_gold"]]
    return kept, pd.DataFrame(report)
