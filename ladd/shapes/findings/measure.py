"""Metrics of benchmark runs with 95% intervals from a bootstrap over prompts, paired contrasts between runs, and the
rule that turns a contrast into a verdict.

Every run of a finding is made on the same held-out prompts with the same seeds, so one matrix of prompt resamples
serves them all (`resample_weights`): an arm's metric and a difference between two arms are computed on the same
resamples (a paired bootstrap; prompts that are hard for one arm are hard for the other). The per-image scores come
from each run's `scores_per_image.parquet` (`bench.score`); the Fréchet distance in shapes-CLIP space is recomputed
here from the images and their renderer ground truth (as `bench.score` computes it), with each resample weighting
every image of a prompt by how often the prompt was drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.report.statistics import bootstrap_weights
from bench.runfolder import read_manifest
from bench.score import PER_IMAGE

# per-image columns of scores_per_image.parquet → the metric names of scores.json
MEAN_METRICS = {"correct": "accuracy", "clip_score": "clip_score", "check_score": "check_score"}
FD = "fd_clip"
HIGHER_IS_BETTER = {"accuracy": True, "clip_score": True, "check_score": True, FD: False}


def resample_weights(prompts: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(1 + n_boot, prompts) counts of each prompt per resample; row 0 is the sample itself (all ones)."""
    return np.vstack([np.ones((1, prompts)), bootstrap_weights(prompts, n_boot, np.random.default_rng(seed))])


def weighted_means(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample: Σ w_p·sum_p / Σ w_p·n_p (images pooled, prompts resampled)."""
    return (weights @ sums) / (weights @ counts)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ1Σ2)^½) as the sum of the square roots of Σ1Σ2's eigenvalues (real and ≥ 0 for covariances, up to
    round-off), as torchmetrics computes it: a matrix square root is slow and unstable for the rank-deficient
    covariances of small runs."""
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).real
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1) + Tr(Σ2) − 2·Tr((Σ1Σ2)^½)."""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                 - 2 * trace_sqrt_product(sigma1, sigma2))


def moments(count: float, total: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance from the count, Σx and Σxxᵀ (torchmetrics' FID uses the same n − 1)."""
    mu = total / count
    return mu, (outer - count * np.outer(mu, mu)) / (count - 1)


@dataclass
class PromptTable:
    """One run's per-prompt sums, aligned on a sorted prompt list: mean metrics (sum, count) and, for the Fréchet
    distance, Σx and Σxxᵀ of the images' and the ground truth's CLIP features."""

    prompts: list[str]
    sums: dict[str, np.ndarray]
    counts: np.ndarray
    features: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # "fake"/"real" → (P×d, P×d×d)

    def resampled(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric on every resample (row 0 of `weights` is the sample)."""
        out = {name: weighted_means(total, self.counts, weights) for name, total in self.sums.items()}
        if self.features is not None:
            out[FD] = np.array([self.frechet(w) for w in weights])
        return out

    def frechet(self, w: np.ndarray) -> float:
        count = float(w @ self.counts)
        (fake_sum, fake_outer), (real_sum, real_outer) = self.features["fake"], self.features["real"]
        fake = moments(count, w @ fake_sum, np.tensordot(w, fake_outer, 1))
        real = moments(count, w @ real_sum, np.tensordot(w, real_outer, 1))
        return frechet_distance(*fake, *real)


def feature_sums(frame: pd.DataFrame, features: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: Σx (P×d) and Σxxᵀ (P×d×d) of the rows' features."""
    index = frame["prompt_id"].map({p: i for i, p in enumerate(prompts)}).to_numpy()
    total = np.zeros((len(prompts), features.shape[1]))
    outer = np.zeros((len(prompts), features.shape[1], features.shape[1]))
    np.add.at(total, index, features)
    np.add.at(outer, index, features[:, :, None] * features[:, None, :])
    return total, outer


def clip_features(run_dir: Path, manifest: pd.DataFrame, clip, cache: Path | None = None) -> dict[str, np.ndarray]:
    """CLIP image features of the run's images ("fake") and of their renderer ground truth ("real": the prompt
    drawn with the image's seed and size, as `bench.score` draws it). Cached in `cache` (keyed by image count)."""
    if cache is not None and cache.is_file():
        stored = np.load(cache)
        if len(stored["fake"]) == len(manifest):
            return {"fake": stored["fake"], "real": stored["real"]}
    from ladd.shapes.render import render_prompt

    fake, real = [], []
    for start in range(0, len(manifest), 256):
        rows = manifest.iloc[start:start + 256]
        images = [Image.open(run_dir / p).convert("RGB") for p in rows["path"]]
        truths = [render_prompt(r.prompt, int(r.seed), int(r.width), int(r.height)) for r in rows.itertuples()]
        fake.append(clip.encode_images(images).double().numpy())
        real.append(clip.encode_images(truths).double().numpy())
    result = {"fake": np.concatenate(fake), "real": np.concatenate(real)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **result)
    return result


def prompt_table(run_dir: str | Path, suite: str = "shapes", clip=None, cache: Path | None = None) -> PromptTable:
    """A run's per-prompt table from its per-image scores (and, given a CLIP, its Fréchet features)."""
    run_dir = Path(run_dir)
    scores = pd.read_parquet(run_dir / PER_IMAGE)
    scores = scores[scores["suite"] == suite]
    prompts = sorted(scores["prompt_id"].unique())
    grouped = scores.groupby("prompt_id").agg(n=("sample_index", "size"), **{
        column: (column, "sum") for column in MEAN_METRICS if column in scores}).reindex(prompts)
    table = PromptTable(prompts, {MEAN_METRICS[c]: grouped[c].to_numpy(float) for c in MEAN_METRICS if c in grouped},
                        grouped["n"].to_numpy(float))
    if clip is not None:
        manifest = read_manifest(run_dir)
        manifest = manifest[manifest["suite"] == suite].reset_index(drop=True)
        features = clip_features(run_dir, manifest, clip, cache)
        table.features = {kind: feature_sums(manifest, features[kind], prompts) for kind in ("fake", "real")}
    return table


def interval(resamples: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): row 0 is the estimate, the others give a percentile interval."""
    tail = (1 - level) / 2
    return float(resamples[0]), float(np.quantile(resamples[1:], tail)), float(np.quantile(resamples[1:], 1 - tail))


def aligned(tables: dict[str, PromptTable]) -> list[str]:
    """The prompts every run has: paired resampling needs one prompt list."""
    common = set.intersection(*(set(t.prompts) for t in tables.values()))
    if any(len(t.prompts) != len(common) for t in tables.values()):
        raise ValueError("the runs of a finding were made on different prompts; a paired bootstrap needs the same")
    return sorted(common)


# --- verdicts ----------------------------------------------------------------------------------------------------

REPRODUCED, CONSISTENT, NOT_REPRODUCED, REVERSED, NO_DATA = ("reproduced", "consistent", "not reproduced",
                                                             "reversed", "no data")


def verdict(estimate: float, low: float, high: float, expected: int, seed_spread: float = 0.0) -> str:
    """The paper's claim against a contrast's interval. `expected` is +1 (the claim: a > b), −1 (a < b) or 0 (no
    difference). An effect counts only when its interval excludes 0 and it is larger than the seed spread (the
    centre's two seeds apart): a prompt bootstrap knows nothing of training noise."""
    if not np.isfinite([estimate, low, high]).all():
        return NO_DATA
    effect = (low > 0 or high < 0) and abs(estimate) > seed_spread
    if expected == 0:
        return NOT_REPRODUCED if effect else CONSISTENT
    if not effect:
        return NOT_REPRODUCED
    return REPRODUCED if np.sign(estimate) == expected else REVERSED
