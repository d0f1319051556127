"""Record simulated votes without a browser, through the same database calls the app makes.

    python -m annotate.simulate --db results/study.db --annotators 12 --prefer-first 0.7 [--careless 2]
    python -m annotate.simulate --db results/study.db --annotators 60 --oracle [--noise 0.1] [--careless 4]

Each simulated annotator registers (gets the least-covered batch, as in the app) and answers every question of
its batch. A careless one clicks at random in 0.3-0.5 s; an attentive one takes 2-8 s per answer. Two kinds of
attentive annotator:

**Content-blind** (the default): it prefers the model under test (the study's first run) over baseline k with
probability expit(logit(p_k) + s), where p_k is --prefer-first (one value for every baseline, or one per baseline
in the study's order) and s a per-prompt shift drawn from N(0, --prompt-spread²), shared by every baseline: annotators
then agree about prompts, as people do (with --prompt-spread 0 every prompt is preferred with exactly p_k). It answers
gold checks correctly with probability 0.97. The truth is known in closed form: the population win rate over prompts
is E[expit(logit(p_k) + s)] (`true_win_rate`), which a study's interval must cover.

**Evaluator-grounded** (`--oracle`, shapes studies): it looks at the two images, read through the study's recorded
paths exactly as the app reads them (`annotate.images.read_image`), and
  - for prompt alignment prefers the image that passes more of the exact evaluator's checks of the prompt
    (`ladd.shapes.evaluate`), a tie (e.g. both fully correct) at random;
  - for image quality prefers the image closer to the renderer's clean image of the same scene (the prompt drawn
    by `ladd.shapes.render` with the comparison's seed at the image's size, as `bench.score`'s Fréchet distance
    uses it): the proxy is the cosine similarity of the two in the shapes CLIP's image space (`models/shapes-clip`),
    and differences under --jnd (a just-noticeable difference) are ties, taken at random.
  Each attentive annotator has its own noise level ε ~ Uniform(0, 2·--noise): with probability ε it answers at
  random instead. Gold checks get the same rule (they are not told apart). Its truth is exact too (`oracle_truth`):
  the noiseless win rate w over the study's comparisons, and what the votes estimate once noise attenuates it,
  0.5 + (1 − mean ε)·(w − 0.5) (`attenuated`).
For demos and tests: the study's truth is known.
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from annotate import db
from annotate.db import QUESTIONS, StudyError
from annotate.images import read_image
from ladd.cli import OneLineParser, run_cli

PROG = "python -m annotate.simulate"
GOLD_ACCURACY = 0.97  # a content-blind attentive annotator's accuracy on gold checks
ATTENTIVE_SECONDS, CARELESS_SECONDS = (2.0, 8.0), (0.3, 0.5)
DEFAULT_JND = 0.01  # cosine similarity differences below this are not seen (the quality proxy's ties)


# --- content-blind annotators ---------------------------------------------------------------------------------

def prompt_shifts(prompt_ids: pd.Series, spread: float, rng: np.random.Generator) -> dict[str, float]:
    """Per-prompt shift on the logit scale, N(0, spread²): how much easier this prompt makes the model's win."""
    unique = sorted(prompt_ids.unique())
    shifts = rng.normal(0.0, spread, size=len(unique)) if spread > 0 else np.zeros(len(unique))
    return dict(zip(unique, shifts))


def preference(prefer: float, shift: float) -> float:
    """Probability of preferring the model on one prompt: expit(logit(p) + s)."""
    return float(expit(logit(prefer) + shift))


def prompt_preferences(prompt_ids: pd.Series, prefer_first: float, spread: float,
                       rng: np.random.Generator) -> dict[str, float]:
    """Per-prompt probability of preferring the model, centred (on the logit scale) on `prefer_first`."""
    return {p: preference(prefer_first, s) for p, s in prompt_shifts(prompt_ids, spread, rng).items()}


def true_win_rate(prefer: float, spread: float, nodes: int = 80) -> float:
    """The population win rate over prompts, E[expit(logit(p) + spread·Z)], Z ~ N(0, 1), by Gauss–Hermite
    quadrature: the estimand a study's interval must cover (it is not p when spread > 0)."""
    z, weights = np.polynomial.hermite_e.hermegauss(nodes)
    return float(np.sum(weights * expit(logit(prefer) + spread * z)) / np.sqrt(2 * np.pi))


def baseline_preferences(systems: pd.DataFrame, prefer_first) -> dict[int, float]:
    """p_k per baseline system id: one value for all, or one per baseline in the study's order."""
    baselines = systems.loc[systems["role"] == "baseline", "id"].astype(int).tolist()
    values = [float(prefer_first)] * len(baselines) if np.isscalar(prefer_first) else [float(v) for v in prefer_first]
    if len(values) != len(baselines):
        raise StudyError(f"--prefer-first has {len(values)} values but the study has {len(baselines)} baselines")
    for value in values:
        if not 0.0 < value < 1.0:
            raise StudyError("--prefer-first must be strictly between 0 and 1")
    return dict(zip(baselines, values))


def other_side(side: str) -> str:
    return db.SIDES[1 - db.SIDES.index(side)]


def random_side(rng: np.random.Generator) -> str:
    return db.SIDES[int(rng.integers(2))]


def choose(item: dict, careless: bool, p_model: float, model_id: int, rng: np.random.Generator) -> str:
    if careless:
        return random_side(rng)
    if item["is_gold"]:
        right = rng.random() < GOLD_ACCURACY
        return item["gold_side"] if right else other_side(item["gold_side"])
    model_side = "left" if item["left_system_id"] == model_id else "right"
    return model_side if rng.random() < p_model else other_side(model_side)


def answer_seconds(careless: bool, rng: np.random.Generator) -> float:
    return rng.uniform(*(CARELESS_SECONDS if careless else ATTENTIVE_SECONDS))


def simulate(engine, study: dict, annotators: int, prefer_first, careless: int = 0,
             prompt_spread: float = 1.0, seed: int = 0, prefix: str = "sim", start: float | None = None) -> int:
    """Register `annotators` content-blind simulated people (the last `careless` of them careless) and record
    their votes. `prefer_first`: one probability, or one per baseline in the study's order."""
    rng = np.random.default_rng(seed)
    systems = db.study_systems(engine, study["id"])
    model_id = int(systems.loc[systems["role"] == "model", "id"].iloc[0])
    prefer = baseline_preferences(systems, prefer_first)
    comparisons = db.study_comparisons(engine, study["id"]).set_index("id")
    shifts = prompt_shifts(comparisons["prompt_id"], prompt_spread, rng)
    clock = time.time() if start is None else start
    recorded = 0
    for k in range(annotators):
        is_careless = k >= annotators - careless
        annotator = db.register_annotator(engine, study["id"], f"{prefix}{k:03d}", now=clock)
        items = db.batch_items(engine, study["id"], annotator["batch"])
        for comparison_id in items["id"]:
            item = comparisons.loc[comparison_id].to_dict()
            baseline = item["right_system_id"] if item["left_system_id"] == model_id else item["left_system_id"]
            p_model = preference(prefer.get(int(baseline), 0.5), shifts[item["prompt_id"]])
            for question in QUESTIONS:
                clock += answer_seconds(is_careless, rng)
                side = choose(item, is_careless, p_model, model_id, rng)
                recorded += db.record_vote(engine, annotator["id"], int(comparison_id), question, side, now=clock)
    return recorded


# --- evaluator-grounded annotators (shapes studies) -----------------------------------------------------------

def checks_passed(image, prompt: str) -> int:
    """How many of the exact evaluator's checks of `prompt` the image passes."""
    from ladd.shapes.evaluate import evaluate

    return int(sum(evaluate(image, prompt).checks.values()))


def reference_image(prompt: str, seed: int, size: tuple[int, int]):
    """The renderer's clean image of the prompt's scene, with the comparison's seed, at the image's size."""
    from ladd.shapes.render import render_prompt

    return render_prompt(prompt, int(seed), int(size[0]), int(size[1]))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def preferred_side(left: float, right: float, tolerance: float = 0.0) -> str | None:
    """The side with the larger value, or None (a tie) when they differ by no more than `tolerance`."""
    if abs(left - right) <= tolerance:
        return None
    return "left" if left > right else "right"


class ImageUnavailable(Exception):
    """An image of the pair cannot be shown (missing or damaged): the app skips such a pair, so does the oracle."""


@dataclass
class OracleJudge:
    """What an evaluator-grounded annotator sees in a pair: checks passed (alignment) and closeness to the clean
    rendering in shapes-CLIP space (quality). Images are read from the study's root like the app reads them;
    every value is computed once and cached."""

    root: str | Path
    clip: object | None = None  # a bench.backbones CLIP backbone; the shapes CLIP is loaded when first needed
    jnd: float = DEFAULT_JND
    _images: dict = field(default_factory=dict)
    _checks: dict = field(default_factory=dict)
    _quality: dict = field(default_factory=dict)

    def image(self, relative: str):
        if relative not in self._images:
            from PIL import Image

            data, problem = read_image(self.root, relative)
            if data is None:
                raise ImageUnavailable(f"{relative}: {problem}")
            self._images[relative] = Image.open(io.BytesIO(data)).convert("RGB")
        return self._images[relative]

    def backbone(self):
        if self.clip is None:
            from bench.backbones import shapes_clip

            self.clip = shapes_clip().load()
        return self.clip

    def checks(self, relative: str, prompt: str) -> int:
        key = (relative, prompt)
        if key not in self._checks:
            self._checks[key] = checks_passed(self.image(relative), prompt)
        return self._checks[key]

    def prepare_quality(self, items: list[dict]) -> None:
        """Embed every image of `items` and its clean reference in one batched pass (one at a time is slow)."""
        keys = [(item[f"{side}_path"], item["prompt"], int(item["seed"])) for item in items for side in db.SIDES]
        keys = [k for k in dict.fromkeys(keys) if k not in self._quality]
        shown = []
        for key in keys:
            try:
                shown.append((key, self.image(key[0])))
            except ImageUnavailable:
                continue  # left to fail when the pair is judged
        if not shown:
            return
        images = [image for _, image in shown]
        references = [reference_image(prompt, seed, image.size) for (_, prompt, seed), image in shown]
        embedded = self.backbone().encode_images(images + references).double().numpy()
        for i, (key, _) in enumerate(shown):
            self._quality[key] = cosine(embedded[i], embedded[len(shown) + i])

    def quality(self, relative: str, prompt: str, seed: int) -> float:
        key = (relative, prompt, int(seed))
        if key not in self._quality:
            self.image(relative)  # raises ImageUnavailable for an image that cannot be shown
            self.prepare_quality([{"left_path": relative, "right_path": relative, "prompt": prompt, "seed": seed}])
        return self._quality[key]

    def preferred(self, item: dict, question: str) -> str | None:
        """The side a noiseless annotator picks for this pair and question; None for a tie."""
        if question == "alignment":
            return preferred_side(self.checks(item["left_path"], item["prompt"]),
                                  self.checks(item["right_path"], item["prompt"]))
        return preferred_side(self.quality(item["left_path"], item["prompt"], item["seed"]),
                              self.quality(item["right_path"], item["prompt"], item["seed"]), self.jnd)


def annotator_noise(mean: float, rng: np.random.Generator) -> float:
    """One annotator's probability of answering at random: Uniform(0, 2·mean), so the study's mean is `mean`."""
    return float(rng.uniform(0.0, min(2.0 * mean, 1.0))) if mean > 0 else 0.0


def noisy_choice(preferred: str | None, epsilon: float, rng: np.random.Generator) -> str:
    """The preferred side, except a random one for a tie or with probability `epsilon`."""
    if preferred is None or rng.random() < epsilon:
        return random_side(rng)
    return preferred


def simulate_oracle(engine, study: dict, annotators: int, careless: int = 0, noise: float = 0.1, seed: int = 0,
                    prefix: str = "oracle", root: str | Path | None = None, judge: OracleJudge | None = None,
                    start: float | None = None) -> int:
    """Register `annotators` evaluator-grounded simulated people (the last `careless` careless) and record their
    votes. A pair whose image cannot be shown gets no vote, as in the app."""
    rng = np.random.default_rng(seed)
    judge = judge or OracleJudge(root or study["root"])
    comparisons = db.study_comparisons(engine, study["id"]).set_index("id")
    clock = time.time() if start is None else start
    recorded = 0
    for k in range(annotators):
        is_careless = k >= annotators - careless
        epsilon = annotator_noise(noise, rng)
        annotator = db.register_annotator(engine, study["id"], f"{prefix}{k:03d}", now=clock)
        items = db.batch_items(engine, study["id"], annotator["batch"])  # the app's view: ids, prompt, paths
        batch = [{**comparisons.loc[i].to_dict(), "id": int(i)} for i in items["id"]]
        if not is_careless:
            judge.prepare_quality(batch)
        for item in batch:
            for question in QUESTIONS:
                clock += answer_seconds(is_careless, rng)
                try:
                    side = random_side(rng) if is_careless else noisy_choice(judge.preferred(item, question),
                                                                              epsilon, rng)
                except ImageUnavailable:
                    continue
                recorded += db.record_vote(engine, annotator["id"], item["id"], question, side, now=clock)
    return recorded


def model_outcome(item: dict, preferred: str | None, model_id: int) -> float:
    """1 when the noiseless annotator picks the model's image, 0 the baseline's, 0.5 on a tie."""
    if preferred is None:
        return 0.5
    model_side = "left" if int(item["left_system_id"]) == model_id else "right"
    return 1.0 if preferred == model_side else 0.0


def attenuated(truth: float, mean_noise: float) -> float:
    """What votes estimate when each answer is random with probability ε (mean `mean_noise`): 0.5 + (1−ε)(w−0.5)."""
    return 0.5 + (1.0 - mean_noise) * (truth - 0.5)


def oracle_truth(engine, study: dict, judge: OracleJudge | None = None, noise: float = 0.0) -> pd.DataFrame:
    """Per baseline and question, over the study's comparisons (gold checks left out, as the report leaves them
    out): how often the noiseless oracle prefers the model, prefers the baseline or ties; the noiseless win rate
    `truth`; and `expected`, the win rate of annotators with mean noise `noise`."""
    judge = judge or OracleJudge(study["root"])
    systems = db.study_systems(engine, study["id"])
    names = dict(zip(systems["id"].astype(int), systems["name"]))
    model_id = int(systems.loc[systems["role"] == "model", "id"].iloc[0])
    comparisons = db.study_comparisons(engine, study["id"])
    items = comparisons[~comparisons["is_gold"].astype(bool)].to_dict("records")
    judge.prepare_quality(items)
    rows = []
    for item in items:
        baseline = int(item["right_system_id"] if int(item["left_system_id"]) == model_id else item["left_system_id"])
        for question in QUESTIONS:
            try:
                outcome = model_outcome(item, judge.preferred(item, question), model_id)
            except ImageUnavailable:
                continue
            rows.append({"baseline": names[baseline], "question": question, "outcome": outcome})
    frame = pd.DataFrame(rows, columns=["baseline", "question", "outcome"])
    table = frame.groupby(["baseline", "question"], sort=False)["outcome"].agg(
        comparisons="size", model_better=lambda o: int((o == 1).sum()), ties=lambda o: int((o == 0.5).sum()),
        baseline_better=lambda o: int((o == 0).sum()), truth="mean").reset_index()
    table.insert(0, "model", names[model_id])
    table["expected"] = [attenuated(t, noise) for t in table["truth"]]
    return table


# --- command line -------------------------------------------------------------------------------------------

def parse_preferences(text: str) -> float | list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability or a comma-separated list of them, got {text!r}")
    return values[0] if len(values) == 1 else values


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--study")
    parser.add_argument("--annotators", type=int, default=12)
    parser.add_argument("--prefer-first", type=parse_preferences, default=0.7,
                        help="content-blind: probability (before the per-prompt shift) that an attentive annotator "
                             "prefers the model; one value, or one per baseline (comma-separated)")
    parser.add_argument("--careless", type=int, default=0, help="how many of the annotators click at random")
    parser.add_argument("--prompt-spread", type=float, default=1.0)
    parser.add_argument("--oracle", action="store_true",
                        help="evaluator-grounded annotators that judge the images (shapes studies)")
    parser.add_argument("--noise", type=float, default=0.1,
                        help="--oracle: mean probability that an attentive annotator answers at random")
    parser.add_argument("--jnd", type=float, default=DEFAULT_JND,
                        help="--oracle: quality-proxy differences (shapes-CLIP cosine) taken as ties")
    parser.add_argument("--root", help="--oracle: where the images are, if not at the study's recorded root")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default=None, help="annotator ids are PREFIX000, PREFIX001, … (default: sim, "
                                                       "or oracle with --oracle)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.noise <= 0.5:
        raise StudyError("--noise must be between 0 and 0.5 (each annotator's own level is drawn up to twice it)")
    if args.careless > args.annotators or args.careless < 0 or args.annotators < 0:
        raise StudyError("--careless must be between 0 and --annotators")
    with db.database_errors(args.db):  # a locked, corrupted or unreachable database: one line, exit 2
        engine = db.make_engine(args.db)
        study = db.get_study(engine, args.study)
        if args.oracle:
            judge = OracleJudge(args.root or study["root"], jnd=args.jnd)
            n = simulate_oracle(engine, study, args.annotators, args.careless, args.noise, args.seed,
                                args.prefix or "oracle", judge=judge)
        else:
            prefer = baseline_preferences(db.study_systems(engine, study["id"]), args.prefer_first)
            n = simulate(engine, study, args.annotators, list(prefer.values()), args.careless, args.prompt_spread,
                         args.seed, args.prefix or "sim")
    kind = "evaluator-grounded" if args.oracle else "content-blind"
    print(f"recorded {n} votes from {args.annotators} {kind} simulated annotators ({args.careless} careless)")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
