"""Shared by the shapes-world result scripts: run `bench.run` on the shapes suite and format its scores as a row."""

from __future__ import annotations

import json
from pathlib import Path

from bench.run import main as bench_run

CATEGORIES = ["single", "two_object", "counting", "size"]


def shapes_scores(model: Path, out: Path, extra: list[str], suite: str = "shapes") -> dict:
    """`bench.run` on a shapes suite (default: the 256 held-out prompts; resumable: finished images are kept);
    the suite's scores."""
    if bench_run(["--model", str(model), "--suite", suite, "--out", str(out), *extra]):
        raise SystemExit(f"bench.run failed for {model} {' '.join(extra)}")
    return json.loads((out / "scores.json").read_text())[suite]


def score_row(label: str, scores: dict, relative_to: float | None = None) -> str:
    """Markdown row: accuracy %, [accuracy relative to a reference], per category %, CLIP score, FD in CLIP space."""
    cells = [f"{100 * scores['accuracy']:.1f}"]
    if relative_to is not None:
        cells.append(f"{100 * scores['accuracy'] / relative_to:.1f}%")  # one decimal: a target is a line
    cells += [f"{100 * scores['per_category'][c]['accuracy']:.1f}" for c in CATEGORIES]
    cells += [f"{scores['clip_score']:.3f}", f"{scores['fd_clip']:.2f}"]
    return f"| {label} | " + " | ".join(cells) + " |"
