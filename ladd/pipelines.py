"""Loading diffusers pipeline folders, including SD3 folders saved without T5."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DiffusionPipeline


def null_components(pipeline_dir: str | Path) -> dict:
    """Components recorded as `[null, null]` in model_index.json (e.g. SD3 without T5).

    diffusers saves such folders but will not load them unless the missing parts are passed explicitly as None
    (the documented `text_encoder_3=None, tokenizer_3=None` call), so we pass them.
    """
    index = json.loads((Path(pipeline_dir) / "model_index.json").read_text())
    return {
        name: None
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value[0] is None
    }


def load_pipeline(pipeline_dir: str | Path, pipeline_class=DiffusionPipeline, **kwargs):
    """`pipeline_class.from_pretrained` on a local folder, with its null components passed as None."""
    kwargs = {**null_components(pipeline_dir), **kwargs}
    return pipeline_class.from_pretrained(str(pipeline_dir), **kwargs)
