"""Loading diffusers pipeline folders, including SD3 folders saved without T5."""

from __future__ import annotations

import json
import os
import shutil
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


def _component_contents(folder: Path) -> dict[str, object]:
    """Every file of a component; JSON configs without the keys that only record where they were loaded from."""
    contents = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k not in ("_name_or_path", "name_or_path")}
            contents[str(path.relative_to(folder))] = data
        else:
            contents[str(path.relative_to(folder))] = path.read_bytes()
    return contents


def link_identical_components(pipeline_dir: str | Path, reference_dir: str | Path) -> list[str]:
    """Replace component folders identical to the reference pipeline's (same weights and configs) with relative
    symlinks.

    A distilled student shares its teacher's VAE, text encoders and tokenizers; linking them keeps a repository
    that holds both (the committed shapes zoo) small, while each folder still loads on its own.
    """
    pipeline_dir, reference_dir = Path(pipeline_dir), Path(reference_dir)
    linked = []
    for component in sorted(p for p in pipeline_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        twin = reference_dir / component.name
        if twin.is_dir() and _component_contents(component) == _component_contents(twin.resolve()):
            shutil.rmtree(component)
            component.symlink_to(os.path.relpath(twin, pipeline_dir))
            linked.append(component.name)
    return linked
