"""Fake run folders in exactly the docs/architecture.md format, for tests and for a demo without bench.run.

`python -m annotate.fixtures --out results/demo` writes two small text-to-image runs (a 1-step "student" and a
50-step "teacher") on `parti128`-shaped prompts, each with tiny PNGs, `manifest.parquet`, `config.json` and
`scores.json`. The images are drawn, not generated: they only need to be real, distinct files.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

CATEGORIES = ("Animals", "Food & Beverage", "Vehicles", "Artifacts")
CHALLENGES = ("Simple Detail", "Fine-grained Detail", "Quantity")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle")


def fake_prompts(n: int) -> pd.DataFrame:
    """`n` prompts with categories and challenges cycling, ids zero-padded like a real suite's row index."""
    rows = []
    for i in range(n):
        colour, shape = COLOURS[i % len(COLOURS)], SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        article = "an" if colour[0] in "aeiou" else "a"
        rows.append({"prompt_id": f"{i:04d}", "prompt": f"{article} {colour} {shape} number {i}",
                     "category": CATEGORIES[i % len(CATEGORIES)], "challenge": CHALLENGES[i % len(CHALLENGES)]})
    return pd.DataFrame(rows)


def _draw(prompt: str, seed: int, sharpness: float, size: int) -> Image.Image:
    """A shape on a background, both from the prompt; a less sharp model draws a smaller, noisier shape."""
    h = zlib.crc32(f"{prompt}|{seed}".encode())
    background = tuple(int(x) for x in ((h & 0xFF), (h >> 8) & 0xFF, (h >> 16) & 0xFF))
    image = Image.new("RGB", (size, size), background)
    margin = int(size * (0.45 - 0.3 * sharpness))
    colour = tuple(255 - c for c in background)
    ImageDraw.Draw(image).ellipse([margin, margin, size - margin, size - margin], fill=colour)
    return image


def write_fake_run(out: str | Path, model: str, steps: int, prompts: pd.DataFrame, samples: int = 2,
                   suite: str = "parti128", sharpness: float = 1.0, size: int = 32, guidance: float = 0.0,
                   tags: dict | None = None, scores: dict | None = None) -> Path:
    """Write a complete run folder; seeds depend only on (prompt_id, sample_index), as in bench.run."""
    out = Path(out)
    rows = []
    for prompt in prompts.to_dict("records"):
        for k in range(samples):
            seed = zlib.crc32(f"{suite}|{prompt['prompt_id']}|{k}".encode()) & 0x7FFFFFFF
            rel = Path("images") / suite / f"{prompt['prompt_id']}_{k}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            _draw(prompt["prompt"], seed, sharpness, size).save(out / rel)
            rows.append({"suite": suite, "prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"],
                         "category": prompt.get("category", ""), "challenge": prompt.get("challenge", ""),
                         "sample_index": k, "seed": seed, "model": model, "steps": steps,
                         "guidance": guidance, "width": size, "height": size, "path": rel.as_posix(),
                         "seconds_per_batch": 0.01 * steps})
    pd.DataFrame(rows).to_parquet(out / "manifest.parquet", index=False)
    config = {"model": model, "suite": [suite], "samples_per_prompt": samples, "steps": steps,
              "guidance": guidance, "seed": 0, "tags": tags or {}}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if scores is not None:
        (out / "scores.json").write_text(json.dumps(scores, indent=2))
    return out


def demo_scores(prompts: pd.DataFrame, suite: str, clip: float) -> dict:
    """A scores.json body with a per-category CLIP score around `clip` (fake but well-formed)."""
    per_category = {c: {"clip_score": round(clip + 0.002 * i, 4)}
                    for i, c in enumerate(sorted(prompts["category"].unique()))}
    return {suite: {"clip_score": clip, "per_category": per_category}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/demo", help="parent folder for the two runs")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    args = parser.parse_args(argv)
    prompts = fake_prompts(args.prompts)
    out = Path(args.out)
    student = write_fake_run(out / "turbo1", "shapes-turbo", 1, prompts, args.samples_per_prompt, sharpness=0.6,
                             scores=demo_scores(prompts, "parti128", 0.27))
    teacher = write_fake_run(out / "teacher50", "shapes-sd3", 50, prompts, args.samples_per_prompt,
                             sharpness=1.0, guidance=5.0, scores=demo_scores(prompts, "parti128", 0.30))
    print(f"wrote {student} and {teacher}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
