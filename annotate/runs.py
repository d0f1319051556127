"""Reading run folders (`results/RUN/`, docs/architecture.md) for the study builder and the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from annotate.db import StudyError

MANIFEST_COLUMNS = ("suite", "prompt_id", "prompt", "category", "challenge", "sample_index", "seed", "model",
                    "steps", "path")


@dataclass
class Run:
    name: str
    dir: Path
    config: dict
    manifest: pd.DataFrame
    scores: dict = field(default_factory=dict)

    @property
    def tags(self) -> dict:
        return self.config.get("tags") or {}


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.parquet").is_file()


def run_name(config: dict, manifest: pd.DataFrame, folder: Path) -> str:
    """`<model>-<steps>step` from config.json (manifest as fallback), else the folder name."""
    model = config.get("model") or (manifest["model"].iloc[0] if len(manifest) else None)
    steps = config.get("steps")
    if steps is None and len(manifest) and manifest["steps"].nunique() == 1:
        steps = manifest["steps"].iloc[0]
    if not model:
        return folder.name
    model = Path(str(model)).name or str(model)  # a local pipeline folder path names itself by its last part
    return f"{model}-{int(steps)}step" if steps is not None else model


def read_run(path: str | Path) -> Run:
    folder = Path(path)
    if not folder.exists():
        raise StudyError(f"run folder not found: {folder}")
    if not is_run_folder(folder):
        raise StudyError(f"not a run folder (no manifest.parquet): {folder}")
    manifest = pd.read_parquet(folder / "manifest.parquet")
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise StudyError(f"{folder}/manifest.parquet lacks columns: {', '.join(missing)}")
    manifest["prompt_id"] = manifest["prompt_id"].astype(str)
    for column in ("category", "challenge"):
        manifest[column] = manifest[column].fillna("").astype(str)
    config = _read_json(folder / "config.json")
    scores = _read_json(folder / "scores.json")
    return Run(run_name(config, manifest, folder), folder.resolve(), config, manifest, scores)


def read_runs(paths: list[str | Path]) -> list[Run]:
    """Read runs; two runs with the same derived name fall back to `<name>@<folder>` so names stay unique."""
    runs = [read_run(p) for p in paths]
    counts = pd.Series([r.name for r in runs]).value_counts()
    for run in runs:
        if counts[run.name] > 1:
            run.name = f"{run.name}@{run.dir.name}"
    return runs


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
