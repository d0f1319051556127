"""`python -m bench.score RUN`: score a run folder into `RUN/scores.json` and print a per-category table.

Which metrics a suite gets follows its task:

| task | suites | metrics (overall; per category where it makes sense) |
|---|---|---|
| text-to-image | drawbench, parti128, parti, custom | `clip_score` |
| text-to-image, shapes world | shapes, shapes-val | `accuracy`, `clip_score` (shapes CLIP), `fd_clip` vs ground-truth renders (overall only) |
| editing | pie-bench | `clip_image_similarity`, `clip_direction_similarity` (per edit type) |
| editing, shapes world | shapes-edit | `edit_accuracy`, `preservation`, `accuracy` (both), `psnr_outside` (the edit region), CLIP image and direction similarity (shapes CLIP), per edit kind |
| inpainting | coco-inpaint | `fid`, `lpips` vs the original images (`per_category` = per mask policy, LPIPS only) |
| inpainting, shapes world | shapes-inpaint | `accuracy` (the scene's exact checks), `fd_clip` and `clip_distance` (the LPIPS stand-in) vs the rendered originals, `psnr_outside` (the mask), per mask policy |

CLIP metrics use the paper's open_clip ViT-g-14 unless `--clip` names another (config.json remembers the run's
choice); the shapes suite uses the shapes world's CLIP (`models/shapes-clip/`). Per-image values go to
`RUN/scores_per_image.parquet` for confidence intervals downstream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.backbones import CLIPBackbone, CLIPChoice, alexnet_weights, inception_weights, shapes_clip
from bench.errors import BenchError
from bench.runfolder import (CONFIG, KEY, MANIFEST, SCORES, atomic_write, damaged_images, lock_run_folder, read_json,
                             read_manifest, write_json)
from bench.suites import EDITING, INPAINTING, SUITES, TEXT_TO_IMAGE, is_shapes_suite
from ladd.cli import OneLineParser, run_cli

PROG = "python -m bench.score"
PER_IMAGE = "scores_per_image.parquet"
CHUNK = 64  # images held in memory at once (a full Parti run at 1024 px would not fit)


def clip_choice(suite: str, override: str | None) -> CLIPChoice:
    if override:
        return CLIPChoice(override)
    return shapes_clip() if is_shapes_suite(suite) else CLIPChoice(None)


def suite_task(suite: str) -> str:
    return SUITES[suite].task if suite in SUITES else TEXT_TO_IMAGE


def check_scoring(suites: list[str], clip: str | None = None) -> None:
    """Fail early (before generating anything) if a metric's backbone or code is missing."""
    for suite in suites:
        task = suite_task(suite)
        if task in (TEXT_TO_IMAGE, EDITING):
            clip_choice(suite, clip).check()
        if is_shapes_suite(suite):
            try:
                import ladd.shapes.evaluate  # noqa: F401
                import ladd.shapes.render  # noqa: F401
            except ImportError as error:
                raise BenchError(f"the shapes suite needs ladd.shapes.evaluate and ladd.shapes.render ({error})")
        if task == INPAINTING and suite != "shapes-inpaint":
            inception_weights()
            alexnet_weights()
        if suite == "shapes-inpaint":
            clip_choice(suite, clip).check()


@dataclass
class Scorers:
    """The backbones behind the metrics; tests inject toy ones, `None` means the standard one from disk."""

    clip: str | None = None  # --clip override
    clip_backbones: dict[str, CLIPBackbone] = field(default_factory=dict)  # suite → backbone, filled lazily
    fid_feature: object | None = None
    lpips_net: Callable | None = None
    evaluator: Callable | None = None
    render: Callable | None = None  # (prompt, seed, width, height) → PIL image, the shapes ground truth
    device: str = "cpu"
    labels: dict[str, str] = field(default_factory=dict)

    def clip_for(self, suite: str) -> CLIPBackbone:
        if suite not in self.clip_backbones:
            choice = clip_choice(suite, self.clip)
            self.clip_backbones[suite] = choice.load(self.device)
            self.labels[suite] = choice.label
        return self.clip_backbones[suite]

    def clip_label(self, suite: str) -> str:
        return self.labels.get(suite) or getattr(self.clip_backbones.get(suite), "name", "")

    def shapes_render(self):
        if self.render is None:
            from ladd.shapes.render import render_prompt

            self.render = render_prompt
        return self.render


def chunks(frame: pd.DataFrame, size: int = CHUNK) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


REMAKE_HINT = "rerun the bench.run command that made the run to make it again"


def load_images(run_dir: Path, paths) -> list[Image.Image]:
    images = []
    for path in paths:
        try:
            with Image.open(run_dir / path) as image:
                images.append(image.convert("RGB"))
        except FileNotFoundError:
            raise BenchError(f"{run_dir / path} is missing; {REMAKE_HINT}") from None
        except (OSError, SyntaxError, ValueError) as error:  # PIL's decode errors
            raise BenchError(f"{run_dir / path} cannot be decoded ({' '.join(str(error).split())}); "
                             f"{REMAKE_HINT}") from None
    return images


def check_images(run_dir: Path, rows: pd.DataFrame) -> None:
    """Before any backbone loads: every image of `rows` exists and has the size it was written with (a stat
    each; images without a recorded size are checked when decoded)."""
    missing = [p for p in rows["path"] if not (run_dir / p).is_file()]
    if missing:
        raise BenchError(f"{len(missing)} image(s) of {run_dir} are missing, first {run_dir / missing[0]}; "
                         f"{REMAKE_HINT}")
    damaged = damaged_images(run_dir, rows["path"], decode_unrecorded=False)
    if damaged:
        path, why = damaged[0]
        raise BenchError(f"{len(damaged)} image(s) of {run_dir} are damaged, first {run_dir / path} ({why}); "
                         f"{REMAKE_HINT}")


def _value(metric) -> float | None:
    try:
        value = float(metric.compute())
    except RuntimeError:  # e.g. Fréchet distance with fewer than two images per set
        return None
    return value if math.isfinite(value) else None


def _distance(metric) -> float | None:
    """A Fréchet distance: ≥ 0 by definition; float64 round-off can leave -1e-12 for identical sets."""
    value = _value(metric)
    return None if value is None else max(value, 0.0)


def score_text_to_image(rows: pd.DataFrame, run_dir: Path, suite: str, scorers: Scorers):
    from bench.metrics import CLIPScore, FrechetCLIPDistance, ShapesAccuracy

    clip = scorers.clip_for(suite)
    clip_score = CLIPScore(clip)
    shapes = is_shapes_suite(suite)
    if shapes:
        accuracy = ShapesAccuracy(scorers.evaluator)
        frechet = FrechetCLIPDistance(clip)
        render = scorers.shapes_render()
    for chunk in chunks(rows):
        images = load_images(run_dir, chunk["path"])
        prompts = list(chunk["prompt"])
        clip_score.update(images, prompts)
        if shapes:
            accuracy.update(images, prompts)
            # Ground truth: each held-out prompt rendered with the image's own seed and size.
            for _, group in chunk.groupby(["width", "height"], sort=False):
                positions = [chunk.index.get_loc(i) for i in group.index]
                frechet.update_pil([images[p] for p in positions], real=False)
                frechet.update_pil([render(r.prompt, int(r.seed), int(r.width), int(r.height))
                                    for r in group.itertuples()], real=True)
    per_image = pd.DataFrame({"clip_score": clip_score.sample_scores().numpy()}, index=rows.index)
    summary = {"clip_score": _value(clip_score)}
    if shapes:
        per_image["correct"] = accuracy.sample_scores().numpy()
        per_image["check_score"] = accuracy.check_scores().numpy()
        summary = {"accuracy": _value(accuracy), **summary, "fd_clip": _distance(frechet),
                   "check_score": float(per_image["check_score"].mean())}
    summary["clip_backbone"] = scorers.clip_label(suite)
    return summary, per_image, "category"


def score_editing(rows: pd.DataFrame, run_dir: Path, suite: str, scorers: Scorers):
    from bench.metrics import CLIPDirectionSimilarity, CLIPImageSimilarity

    clip = scorers.clip_for(suite)
    similarity, direction = CLIPImageSimilarity(clip), CLIPDirectionSimilarity(clip)
    for chunk in chunks(rows):
        edited, sources = load_images(run_dir, chunk["path"]), load_images(run_dir, chunk["source_path"])
        similarity.update(sources, edited)
        direction.update(sources, edited, list(chunk["source_prompt"]), list(chunk["target_prompt"]))
    per_image = pd.DataFrame({"clip_image_similarity": similarity.sample_scores().numpy(),
                              "clip_direction_similarity": direction.sample_scores().numpy()}, index=rows.index)
    summary = {"clip_image_similarity": _value(similarity), "clip_direction_similarity": _value(direction),
               "clip_backbone": scorers.clip_label(suite)}
    return summary, per_image, "category"


def score_inpainting(rows: pd.DataFrame, run_dir: Path, suite: str, scorers: Scorers):
    from bench.backbones import pil_to_uint8
    from bench.metrics import LPIPS, fid

    frechet = fid(scorers.fid_feature)
    lpips = LPIPS(scorers.lpips_net)
    for chunk in chunks(rows):
        outputs, originals = load_images(run_dir, chunk["path"]), load_images(run_dir, chunk["source_path"])
        originals = [o if o.size == g.size else o.resize(g.size, Image.LANCZOS) for o, g in zip(originals, outputs)]
        lpips.update(outputs, originals)
        for _, group in chunk.groupby(["width", "height"], sort=False):
            positions = [chunk.index.get_loc(i) for i in group.index]
            frechet.update(pil_to_uint8([outputs[p] for p in positions]), real=False)
            frechet.update(pil_to_uint8([originals[p] for p in positions]), real=True)
    per_image = pd.DataFrame({"lpips": lpips.sample_scores().numpy()}, index=rows.index)
    return {"fid": _distance(frechet), "lpips": _value(lpips)}, per_image, "mask_policy"


def score_shapes_edit(rows: pd.DataFrame, run_dir: Path, suite: str, scorers: Scorers):
    """The edit world's exact scores (the edit regenerated from its kind, seed and size) and CLIP's two."""
    from bench.metrics import CLIPDirectionSimilarity, CLIPImageSimilarity, ShapesEditAccuracy
    from ladd.shapes.edits import edit_from_seed

    clip = scorers.clip_for(suite)
    exact, similarity, direction = ShapesEditAccuracy(), CLIPImageSimilarity(clip), CLIPDirectionSimilarity(clip)
    for chunk in chunks(rows):
        edited, sources = load_images(run_dir, chunk["path"]), load_images(run_dir, chunk["source_path"])
        edits = [edit_from_seed(r.edit_kind, int(r.edit_seed), int(r.width), int(r.height)) for r in chunk.itertuples()]
        exact.update(sources, edited, edits)
        similarity.update(sources, edited)
        direction.update(sources, edited, list(chunk["source_prompt"]), list(chunk["target_prompt"]))
    per_image = pd.DataFrame({"correct": exact.sample_scores().numpy(), "edit_accuracy": exact.edit_scores().numpy(),
                              "preservation": exact.preservation_scores().numpy(),
                              "psnr_outside": exact.psnr_values().numpy(),
                              "clip_image_similarity": similarity.sample_scores().numpy(),
                              "clip_direction_similarity": direction.sample_scores().numpy()}, index=rows.index)
    summary = {"accuracy": _value(exact), "edit_accuracy": float(per_image["edit_accuracy"].mean()),
               "preservation": float(per_image["preservation"].mean()),
               "psnr_outside": float(per_image["psnr_outside"].median()),
               "clip_image_similarity": _value(similarity), "clip_direction_similarity": _value(direction),
               "clip_backbone": scorers.clip_label(suite)}
    return summary, per_image, "category"


def psnr_outside(image: Image.Image, original: Image.Image, mask: Image.Image) -> float:
    """PSNR over the pixels a mask leaves (white = filled); 100 for identical pixels."""
    from ladd.shapes.edits import psnr

    keep = np.asarray(mask.convert("L")) < 128
    return min(psnr(np.asarray(image)[keep], np.asarray(original)[keep]), 100.0)


def score_shapes_inpaint(rows: pd.DataFrame, run_dir: Path, suite: str, scorers: Scorers):
    """Exact accuracy of the whole scene after filling, and distances to the rendered original in the shapes CLIP's
    space: Fréchet over the set, 1 - cos per image (the LPIPS stand-in)."""
    from bench.metrics import CLIPImageDistance, FrechetCLIPDistance, ShapesAccuracy

    clip = scorers.clip_for(suite)
    accuracy, frechet, distance = ShapesAccuracy(scorers.evaluator), FrechetCLIPDistance(clip), CLIPImageDistance(clip)
    kept = []
    for chunk in chunks(rows):
        outputs, originals = load_images(run_dir, chunk["path"]), load_images(run_dir, chunk["source_path"])
        masks = load_images(run_dir, chunk["mask_path"])
        accuracy.update(outputs, list(chunk["prompt"]))
        distance.update(outputs, originals)
        kept += [psnr_outside(o, g, m) for o, g, m in zip(outputs, originals, masks)]
        for _, group in chunk.groupby(["width", "height"], sort=False):
            positions = [chunk.index.get_loc(i) for i in group.index]
            frechet.update_pil([outputs[p] for p in positions], real=False)
            frechet.update_pil([originals[p] for p in positions], real=True)
    per_image = pd.DataFrame({"correct": accuracy.sample_scores().numpy(),
                              "clip_distance": distance.sample_scores().numpy(), "psnr_outside": kept},
                             index=rows.index)
    summary = {"accuracy": _value(accuracy), "fd_clip": _distance(frechet), "clip_distance": _value(distance),
               "psnr_outside": float(np.median(kept)), "clip_backbone": scorers.clip_label(suite)}
    return summary, per_image, "mask_policy"


SCORERS = {TEXT_TO_IMAGE: score_text_to_image, EDITING: score_editing, INPAINTING: score_inpainting}
SUITE_SCORERS = {"shapes-edit": score_shapes_edit, "shapes-inpaint": score_shapes_inpaint}


def per_category(rows: pd.DataFrame, per_image: pd.DataFrame, column: str) -> dict:
    if column not in rows or (rows[column].fillna("") == "").all():
        return {}
    table = per_image.join(rows[[column]]).groupby(column, sort=True)
    means = table.mean(numeric_only=True)
    counts = table.size()
    out = {}
    for category, values in means.iterrows():
        out[str(category)] = {"n_images": int(counts[category]),
                              **{k: (float(v) if pd.notna(v) else None) for k, v in values.items()}}
    return out


def require_run_folder(run_dir: Path) -> None:
    if not (run_dir / MANIFEST).is_file():
        raise BenchError(f"{run_dir} is not a run folder (no {MANIFEST}); make one with `python -m bench.run`")


def score_run(run_dir: str | Path, scorers: Scorers | None = None, suites: list[str] | None = None) -> dict:
    """Score every suite of a run folder; writes scores.json (merged with scores of other suites) and the
    per-image table, and returns the scores."""
    run_dir = Path(run_dir)
    require_run_folder(run_dir)
    scorers = scorers or Scorers()
    manifest = read_manifest(run_dir)
    suites = suites or list(dict.fromkeys(manifest["suite"]))
    scores = read_json(run_dir / SCORES)
    for suite in suites:
        if not (manifest["suite"] == suite).any():
            raise BenchError(f"{run_dir / MANIFEST} has no images of suite {suite!r}")
    check_images(run_dir, manifest[manifest["suite"].isin(suites)])
    per_image_frames = []
    for suite in suites:
        rows = manifest[manifest["suite"] == suite]
        scorer = SUITE_SCORERS.get(suite) or SCORERS[suite_task(suite)]
        summary, per_image, group_by = scorer(rows, run_dir, suite, scorers)
        by_category = per_category(rows, per_image.rename(columns={"correct": "accuracy"}), group_by)
        scores[suite] = {"n_images": int(len(rows)), **summary, "per_category": by_category}
        per_image_frames.append(rows[KEY].join(per_image))
    write_json(run_dir / SCORES, scores)
    if per_image_frames:
        table = pd.concat(per_image_frames, ignore_index=True)
        old_path = run_dir / PER_IMAGE
        if old_path.is_file():  # keep other suites' rows
            old = pd.read_parquet(old_path)
            table = pd.concat([old[~old["suite"].isin(suites)], table], ignore_index=True)
        atomic_write(old_path, lambda tmp: table.to_parquet(tmp, index=False))
    return scores


# ---------------------------------------------------------------------------------------------------------------
# The table


METRIC_ORDER = ["accuracy", "edit_accuracy", "preservation", "clip_score", "fd_clip", "clip_distance", "psnr_outside",
                "clip_image_similarity", "clip_direction_similarity", "fid", "lpips", "check_score"]


def format_scores(scores: dict, suites: list[str] | None = None) -> str:
    """One block per suite: the overall row, then one row per category."""
    blocks = []
    for suite in suites or list(scores):
        result = scores[suite]
        categories = result.get("per_category", {}).values()
        metrics = [m for m in METRIC_ORDER if m in result or any(m in c for c in categories)]
        rows = {"all": {"n_images": result.get("n_images"), **{m: result.get(m) for m in metrics}}}
        for category, values in result.get("per_category", {}).items():
            rows[category] = {"n_images": values.get("n_images"), **{m: values.get(m) for m in metrics}}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table["n_images"] = table["n_images"].astype("Int64")
        backbone = f"  (CLIP: {result['clip_backbone']})" if result.get("clip_backbone") else ""
        blocks.append(f"{suite}{backbone}\n" + table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"))
    return "\n\n".join(blocks)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run folder (results/RUN)")
    parser.add_argument("--clip", default=None,
                        help="CLIP for CLIP metrics: a Hugging Face CLIP folder or an open_clip ViT-g-14 weights file "
                             "(default: the run's choice, else ViT-g-14 laion2b_s34b_b88k; shapes: models/shapes-clip)")
    parser.add_argument("--suite", default=None, help="score only these suites (comma-separated)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_dir = Path(args.run)
    config = read_json(run_dir / CONFIG)
    clip = args.clip or config.get("clip")
    suites = [s.strip() for s in args.suite.split(",")] if args.suite else None
    manifest_suites = list(dict.fromkeys(read_manifest(run_dir)["suite"])) if (run_dir / MANIFEST).is_file() else []
    check_scoring(suites or manifest_suites, clip)
    import torch

    require_run_folder(run_dir)
    # scores.json and the per-image table are written into the run folder: not while bench.run writes it.
    with lock_run_folder(run_dir, PROG):
        scores = score_run(run_dir, Scorers(clip=clip, device="cuda" if torch.cuda.is_available() else "cpu"),
                           suites)
    print(format_scores(scores, suites or manifest_suites))
    print(f"\nwrote {run_dir / SCORES}")
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
