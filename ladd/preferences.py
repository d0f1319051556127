"""Preference data: one table format for Diffusion-DPO, whatever made the pairs.

    prompt      the text both images answer
    preferred   path of the preferred image (relative to the table's folder, or absolute)
    rejected    path of the rejected image
    source      where the pair came from ("study:alignment", "evaluator", "pick-a-pic", ...)
    weight      how much the pair counts (e.g. the share of votes behind it); 1 by default

Builders write this table: `annotate.preferences` from a study database (the majority vote per comparison and
question, after the report's annotator filters, ties dropped), `ladd.shapes.preferences` from the shapes world's exact
evaluator, and `read_preferences` itself reads a file in the Pick-a-Pic layout (`caption`, `image_0`, `image_1`,
`label_0`; 0.5 labels are ties and are dropped). Parquet or CSV.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
from PIL import Image

from ladd.cli import LaddError

PREFERENCE_COLUMNS = ["prompt", "preferred", "rejected", "source", "weight"]
PICK_A_PIC_COLUMNS = ["caption", "image_0", "image_1", "label_0"]


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LaddError(f"preference file {path} not found")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise LaddError(f"{path} is not a readable preference table ({' '.join(str(error).split())[:200]})") from None


def from_pick_a_pic(table: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Pick-a-Pic rows as preference pairs: label_0 = 1 prefers image_0, 0 prefers image_1, 0.5 is a tie (dropped).
    Images stored as bytes (the dataset's parquet) are written beside the table, once."""
    table = table[table["label_0"].astype(float) != 0.5].reset_index(drop=True)
    images = folder / "pick-a-pic-images"
    paths = {}
    for column in ("image_0", "image_1"):
        values = []
        for i, value in enumerate(table[column]):
            if isinstance(value, dict):  # a datasets Image feature: {"bytes": ..., "path": ...}
                value = value.get("bytes") or value.get("path")
            if isinstance(value, (bytes, bytearray)):
                path = images / f"{i:07d}-{column}.png"
                if not path.is_file():
                    images.mkdir(parents=True, exist_ok=True)
                    Image.open(io.BytesIO(value)).convert("RGB").save(path)
                value = str(path)
            values.append(str(value))
        paths[column] = values
    first = table["label_0"].astype(float) == 1
    return pd.DataFrame({
        "prompt": table["caption"].astype(str),
        "preferred": [a if f else b for a, b, f in zip(paths["image_0"], paths["image_1"], first)],
        "rejected": [b if f else a for a, b, f in zip(paths["image_0"], paths["image_1"], first)],
        "source": "pick-a-pic",
        "weight": 1.0,
    })


def read_preferences(path: str | Path) -> pd.DataFrame:
    """The pairs of a preference table (or a Pick-a-Pic file), image paths resolved against its folder."""
    path = Path(path)
    table = read_table(path)
    if set(PICK_A_PIC_COLUMNS) <= set(table.columns):
        table = from_pick_a_pic(table, path.parent)
    missing = [c for c in ("prompt", "preferred", "rejected") if c not in table.columns]
    if missing:
        raise LaddError(f"{path} lacks the columns {missing} (a preference table has {PREFERENCE_COLUMNS}, a "
                        f"Pick-a-Pic file {PICK_A_PIC_COLUMNS})")
    table = table.assign(source=table["source"] if "source" in table else "", weight=pd.to_numeric(
        table["weight"] if "weight" in table else 1.0, errors="coerce"))
    if table["weight"].isna().any() or (table["weight"] <= 0).any():
        raise LaddError(f"{path}: every weight must be a positive number")
    for column in ("preferred", "rejected"):
        table[column] = [str(Path(p) if Path(p).is_absolute() else path.parent / p) for p in table[column]]
    if table.empty:
        raise LaddError(f"no preference pairs in {path}")
    return table[PREFERENCE_COLUMNS].reset_index(drop=True)


def write_preferences(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a preference table (paths made relative to its folder where they lie below it), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table[PREFERENCE_COLUMNS].copy()
    for column in ("preferred", "rejected"):
        table[column] = [os.path.relpath(p, path.parent) if Path(p).is_absolute() else p for p in table[column]]
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".parquet":
        table.to_parquet(tmp, index=False)
    else:
        table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
