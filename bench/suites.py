"""Benchmark suites: each loader reads its data in the format it is published in and returns one frame per suite.

Every frame has the columns of `BASE_COLUMNS` (one row per prompt, in a fixed order, so `--limit N` always takes
the same N rows and ids never depend on the limit). `width`/`height` are 0 where the model's default resolution
applies (only the shapes suite fixes a size per prompt). Editing and inpainting suites add the columns their
generation and metrics need (`source_path`, `source_prompt`, `target_prompt`, ...).
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from ladd.cli import LaddError
from ladd.paths import PROMPTS_DIR, REPO_ROOT
from ladd.prompts import read_prompt_file, read_text

TEXT_TO_IMAGE, EDITING, INPAINTING = "text-to-image", "editing", "inpainting"
BASE_COLUMNS = ["prompt_id", "prompt", "category", "challenge", "width", "height"]
DEFAULT_DATA_DIR = REPO_ROOT / "data"

DRAWBENCH_PATH = PROMPTS_DIR / "drawbench.csv"
PARTI_PATH = PROMPTS_DIR / "parti_prompts.tsv"
PARTI128_PATH = PROMPTS_DIR / "parti128.txt"
SHAPES_PATH = PROMPTS_DIR / "shapes_heldout.csv"
SHAPES_VAL_PATH = PROMPTS_DIR / "shapes_val.csv"
SHAPES_EDITS_PATH = PROMPTS_DIR / "shapes_edits.csv"

# PIE-Bench's ten edit types (cure-lab/PnPInversion), keyed by `editing_type_id`.
PIE_BENCH_EDIT_TYPES = {
    "0": "random",
    "1": "change object",
    "2": "add object",
    "3": "delete object",
    "4": "change content",
    "5": "change pose",
    "6": "change color",
    "7": "change material",
    "8": "change background",
    "9": "change style",
}
PIE_BENCH_MASK_SHAPE = (512, 512)

PIE_BENCH_HINT = (
    "PIE-Bench is distributed on request (https://github.com/cure-lab/PnPInversion, see its README); unpack it so "
    "that DIR/mapping_file.json and DIR/annotation_images/ exist and pass --data-dir DIR"
)
COCO_HINT = (
    "download http://images.cocodataset.org/zips/val2017.zip and "
    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip and unzip both into DIR "
    "(DIR/val2017/*.jpg, DIR/annotations/captions_val2017.json), then pass --data-dir DIR"
)


class SuiteDataError(BenchError):
    """A suite's data is missing or malformed."""


# ---------------------------------------------------------------------------------------------------------------
# Text helpers


def numbered_ids(n: int) -> list[str]:
    # Zero-padded so that ids sort like rows; four digits cover every shipped prompt list.
    return [f"{i:04d}" for i in range(n)]


_QUOTES = "\"'\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00b4`"


def match_key(text: str) -> str:
    """A key under which the paper's printed prompts equal PartiPrompts' rows.

    The paper prints curly apostrophes and drops some quotation marks (`"G I G G L E" painted ...` is printed
    without them), so quotes are removed rather than straightened; whitespace is collapsed.
    """
    text = unicodedata.normalize("NFKC", text)
    text = text.translate({ord(q): None for q in _QUOTES})
    return " ".join(text.split())


def strip_edit_brackets(text: str) -> str:
    """PIE-Bench marks edited words with `[...]`; the caption itself is the text without the brackets."""
    return " ".join(text.replace("[", " ").replace("]", " ").split())


def _require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise SuiteDataError(f"{path} not found; {hint}")
    return path


def _text(path: Path) -> str:
    """A data file's text as UTF-8 (the encoding every shipped file and dataset uses); anything else is one
    SuiteDataError naming the file and the first byte that is not UTF-8."""
    try:
        return read_text(path)
    except LaddError as error:
        raise SuiteDataError(str(error)) from None
    except OSError as error:
        raise SuiteDataError(f"cannot read {path} ({error.strerror or error})") from None


def _table(path: Path, **options) -> pd.DataFrame:
    """A CSV/TSV file as a frame of strings; empty or unparsable files are one SuiteDataError, not a traceback."""
    text = _text(path)
    if not text.strip():
        raise SuiteDataError(f"{path} is empty")
    try:
        return pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as error:
        raise SuiteDataError(f"{path} is not a readable table ({' '.join(str(error).split())})") from None


def _json(path: Path):
    text = _text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SuiteDataError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None


def _frame(rows: pd.DataFrame | list[dict], **extra_defaults) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    defaults = {"category": "", "challenge": "", "width": 0, "height": 0, **extra_defaults}
    for column, value in defaults.items():
        if column not in frame:
            frame[column] = value
    if "prompt_id" not in frame:
        frame["prompt_id"] = numbered_ids(len(frame))
    frame["width"] = frame["width"].astype(int)
    frame["height"] = frame["height"].astype(int)
    rest = [c for c in frame.columns if c not in BASE_COLUMNS]
    return frame[BASE_COLUMNS + rest].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------
# Prompt lists


def read_drawbench(path: str | Path = DRAWBENCH_PATH) -> pd.DataFrame:
    """DrawBench's 200 prompts. The original sheet names the text column `Prompts`, later copies `Prompt`.

    Categories are stripped: the sheet's "Gary Marcus et al. " carries a trailing space that would otherwise make
    a category of its own wherever a copy without it is compared. Prompts are kept exactly as written.
    """
    path = _require_file(Path(path), "restore it with `git checkout prompts/drawbench.csv`")
    table = _table(path)
    text_column = next((c for c in ("Prompt", "Prompts", "prompt") if c in table.columns), None)
    if text_column is None or "Category" not in table.columns:
        raise SuiteDataError(f"{path}: expected columns Prompt (or Prompts) and Category, got {list(table.columns)}")
    return _frame({"prompt": table[text_column], "category": table["Category"].str.strip()})


def read_parti(path: str | Path = PARTI_PATH) -> pd.DataFrame:
    """All 1632 PartiPrompts (P2). Quoting is off: 22 prompts contain `"` and one starts with it."""
    path = _require_file(Path(path), "restore it with `git checkout prompts/parti_prompts.tsv`")
    table = _table(path, sep="\t", quoting=csv.QUOTE_NONE)
    missing = {"Prompt", "Category", "Challenge"} - set(table.columns)
    if missing:
        raise SuiteDataError(f"{path}: missing columns {sorted(missing)}")
    return _frame({"prompt": table["Prompt"], "category": table["Category"], "challenge": table["Challenge"]})


def read_parti128(path: str | Path = PARTI128_PATH, parti: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's 128 human-study prompts (Appendix A.1) with PartiPrompts' Category and Challenge.

    The model sees PartiPrompts' text (what every other model in the benchmark is prompted with); the paper's
    printed line is kept in `paper_prompt`. Every line must match exactly one PartiPrompts row.
    """
    path = _require_file(Path(path), "restore it with `git checkout prompts/parti128.txt`")
    parti = read_parti() if parti is None else parti
    lines = [line for line in _text(path).splitlines() if line.strip()]
    rows_by_key: dict[str, list[int]] = {}
    for row, text in enumerate(parti["prompt"]):
        rows_by_key.setdefault(match_key(text), []).append(row)
    unmatched = [line for line in lines if len(rows_by_key.get(match_key(line), [])) != 1]
    if unmatched:
        raise SuiteDataError(f"{path}: {len(unmatched)} prompt(s) match no single PartiPrompts row, "
                             f"first: {unmatched[0]!r}")
    if len(lines) != 128:
        raise SuiteDataError(f"{path}: expected the paper's 128 prompts, found {len(lines)}")
    matched = parti.iloc[[rows_by_key[match_key(line)][0] for line in lines]]
    return _frame({
        "prompt": matched["prompt"].to_numpy(),
        "category": matched["category"].to_numpy(),
        "challenge": matched["challenge"].to_numpy(),
        "paper_prompt": lines,
        "parti_id": matched["prompt_id"].to_numpy(),
    })


def read_shapes(path: str | Path = SHAPES_PATH) -> pd.DataFrame:
    """A shapes-world prompt set (held-out or validation): `prompt,category,width,height`, one size per prompt."""
    path = _require_file(Path(path), "write it with `python -m ladd.shapes.heldout` (`--split val` for the "
                                     "validation set)")
    table = _table(path)
    missing = {"prompt", "category", "width", "height"} - set(table.columns)
    if missing:
        raise SuiteDataError(f"{path}: missing columns {sorted(missing)}")
    sizes = table[["width", "height"]].apply(pd.to_numeric, errors="coerce")
    if sizes.isna().any().any():
        raise SuiteDataError(f"{path}: width and height must be whole numbers")
    return _frame(table[["prompt", "category"]].assign(width=sizes["width"], height=sizes["height"]))


def read_prompts_file(path: str | Path) -> pd.DataFrame:
    """A custom prompt list, read by the reader `ladd.synth` shares (`ladd.prompts.read_prompt_file`): text, one
    prompt a line, or a CSV with a `prompt` column; its `category` and `challenge` columns are kept."""
    try:
        table = read_prompt_file(path)
    except LaddError as error:  # one error type per package: callers of bench see a BenchError
        raise SuiteDataError(str(error)) from None
    except OSError as error:  # e.g. no permission to read it
        raise SuiteDataError(f"cannot read prompt file {path} ({error.strerror or error})") from None
    return _frame(table[[c for c in ("prompt", "category", "challenge") if c in table.columns]])


# ---------------------------------------------------------------------------------------------------------------
# Image datasets


def _find(candidates: list[Path], predicate: Callable[[Path], bool]) -> Path | None:
    return next((c for c in candidates if predicate(c)), None)


def decode_rle_mask(rle: list[int], shape: tuple[int, int] = PIE_BENCH_MASK_SHAPE) -> np.ndarray:
    """PIE-Bench's mask: flat `[start, length, start, length, ...]` runs of 1 over a row-major array."""
    if len(rle) % 2:
        raise ValueError(f"run-length mask has an odd number of entries ({len(rle)})")
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    for start, length in zip(rle[0::2], rle[1::2]):
        if start < 0 or length < 0 or start >= flat.size:
            raise ValueError(f"run ({start}, {length}) lies outside a {shape[0]}x{shape[1]} mask")
        flat[start : start + length] = True  # a run past the end is clipped, as the reference decoder does
    return flat.reshape(shape)


def pie_bench_root(data_dir: str | Path) -> Path:
    data_dir = Path(data_dir)
    candidates = [data_dir / name for name in ("", "PIE-Bench", "pie-bench", "PIE_Bench_pp", "data")]
    root = _find(candidates, lambda d: (d / "mapping_file.json").is_file())
    if root is None:
        raise SuiteDataError(f"no PIE-Bench mapping_file.json under {data_dir}; {PIE_BENCH_HINT}")
    return root


def read_pie_bench(data_dir: str | Path = DEFAULT_DATA_DIR) -> pd.DataFrame:
    """PIE-Bench (700 images, 10 edit types): `mapping_file.json` keyed by id, images under annotation_images/.

    The model is prompted with the target caption (`editing_prompt` without its `[...]` marks); instruction-based
    editors read `instruction`. The edit-region mask stays run-length encoded in `edit_mask_rle` (JSON).
    """
    root = pie_bench_root(data_dir)
    mapping = _json(root / "mapping_file.json")
    if not isinstance(mapping, dict):
        raise SuiteDataError(f"{root / 'mapping_file.json'} is not a JSON object keyed by image id")
    rows = []
    for key in sorted(mapping):
        item = mapping[key]
        missing = {"image_path", "original_prompt", "editing_prompt", "editing_type_id"} - set(
            item if isinstance(item, dict) else {})
        if missing:
            raise SuiteDataError(f"{root / 'mapping_file.json'}: entry {key} lacks {sorted(missing)}")
        source = root / "annotation_images" / item["image_path"]
        type_id = str(item["editing_type_id"])
        target = strip_edit_brackets(item["editing_prompt"])
        rows.append({
            "prompt_id": str(key),
            "prompt": target,
            "category": PIE_BENCH_EDIT_TYPES.get(type_id, type_id),
            "editing_type_id": type_id,
            "source_path": str(source.resolve()),
            "source_prompt": strip_edit_brackets(item["original_prompt"]),
            "target_prompt": target,
            "instruction": item.get("editing_instruction", ""),
            "blended_word": item.get("blended_word", ""),
            "edit_mask_rle": json.dumps(item.get("mask", [])),
        })
    if not rows:
        raise SuiteDataError(f"{root / 'mapping_file.json'} has no entries")
    return _frame(rows)


def coco_captions_file(data_dir: str | Path) -> Path:
    data_dir = Path(data_dir)
    folders = [data_dir, data_dir / "annotations", data_dir / "coco", data_dir / "coco" / "annotations"]
    found = [f for folder in folders if folder.is_dir() for f in sorted(folder.glob("captions_*.json"))]
    if not found:
        raise SuiteDataError(f"no COCO captions_*.json under {data_dir}; {COCO_HINT}")
    # Prefer a validation split (the paper evaluates inpainting on COCO val), newest first.
    found.sort(key=lambda f: ("val" not in f.stem, f.stem != "captions_val2017", f.name))
    return found[0]


def _coco_rows(captions: dict, image_dir: Path) -> list[dict]:
    first_caption: dict[int, tuple[int, str]] = {}
    for note in captions.get("annotations", []):
        best = first_caption.get(note["image_id"])
        if best is None or note["id"] < best[0]:
            first_caption[note["image_id"]] = (note["id"], note["caption"])
    rows = []
    for image in sorted(captions.get("images", []), key=lambda im: im["id"]):
        if image["id"] not in first_caption:
            continue  # an image without a caption cannot be a text-conditioned inpainting example
        rows.append({
            "prompt_id": Path(image["file_name"]).stem,
            "prompt": " ".join(first_caption[image["id"]][1].split()),
            "coco_id": int(image["id"]),
            "source_path": str((image_dir / image["file_name"]).resolve()),
        })
    return rows


def read_coco_captions(data_dir: str | Path = DEFAULT_DATA_DIR) -> pd.DataFrame:
    """COCO images with one caption each (the lowest annotation id), ordered by image id.

    Images live in a folder named after the captions file's split (`captions_val2017.json` → `val2017/`) beside
    the annotations folder or inside the data dir.
    """
    captions_path = coco_captions_file(data_dir)
    captions = _json(captions_path)
    if not isinstance(captions, dict):
        raise SuiteDataError(f"{captions_path} is not a COCO captions file (a JSON object with images and "
                             "annotations)")
    split = captions_path.stem.removeprefix("captions_")
    image_dirs = [captions_path.parent.parent / split, captions_path.parent / split, Path(data_dir) / split,
                  Path(data_dir) / "images" / split]
    image_dir = _find(image_dirs, Path.is_dir)
    if image_dir is None:
        raise SuiteDataError(f"COCO image folder {split}/ not found next to {captions_path}; {COCO_HINT}")
    try:
        rows = _coco_rows(captions, image_dir)
    except (KeyError, TypeError, AttributeError) as error:  # a JSON file of another shape
        raise SuiteDataError(f"{captions_path} is not a COCO captions file ({type(error).__name__}: {error})") from None
    if not rows:
        raise SuiteDataError(f"{captions_path} lists no captioned images")
    return _frame(rows)


# ---------------------------------------------------------------------------------------------------------------
# The shapes world's image-to-image suites: their sources are renderings, made once into the data folder


SHAPES_INPAINT_SCENES = 43  # held-out scenes (every sixth row, all categories) x 6 mask policies = 258 images


def _render_once(path: Path, draw: Callable) -> str:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        draw().save(tmp)
        tmp.replace(path)
    return str(path.resolve())


def read_shapes_edits(data_dir: str | Path = DEFAULT_DATA_DIR, path: str | Path = SHAPES_EDITS_PATH) -> pd.DataFrame:
    """The held-out edits (prompts/shapes_edits.csv): each row's edit named exactly by (kind, seed, size); its
    rendered source goes under DATA_DIR/shapes-edit/. Instruction editors read `instruction`; text-to-image models
    editing by SDEdit are prompted with the target caption (`prompt`)."""
    from ladd.shapes.edits import edit_from_seed

    path = _require_file(Path(path), "write it with `python -m ladd.shapes.heldout --split edits`")
    table = _table(path)
    missing = {"kind", "seed", "width", "height", "source_prompt", "instruction", "target_prompt"} - set(table.columns)
    if missing:
        raise SuiteDataError(f"{path}: missing columns {sorted(missing)}")
    rows = []
    for i, row in enumerate(table.to_dict("records")):
        prompt_id, size = f"{i:04d}", (int(row["width"]), int(row["height"]))
        source = _render_once(Path(data_dir) / "shapes-edit" / f"{prompt_id}.png",
                              lambda: edit_from_seed(row["kind"], int(row["seed"]), *size).render()[0])
        rows.append({"prompt_id": prompt_id, "prompt": row["target_prompt"], "category": row["kind"],
                     "width": size[0], "height": size[1], "instruction": row["instruction"],
                     "source_prompt": row["source_prompt"], "target_prompt": row["target_prompt"],
                     "edit_kind": row["kind"], "edit_seed": int(row["seed"]), "source_path": source})
    return _frame(rows)


def read_shapes_inpaint(data_dir: str | Path = DEFAULT_DATA_DIR) -> pd.DataFrame:
    """Held-out scenes x the six mask policies: every sixth held-out prompt, rendered once under
    DATA_DIR/shapes-inpaint/, masked by each policy (`bench.masks`) in turn; the category is the policy."""
    from bench.masks import MASK_POLICIES
    from bench.seeding import stable_seed
    from ladd.shapes.render import render_prompt

    scenes = read_shapes().iloc[::6].head(SHAPES_INPAINT_SCENES)
    rows = []
    for scene in scenes.to_dict("records"):
        seed, size = stable_seed("shapes-inpaint", scene["prompt_id"]), (int(scene["width"]), int(scene["height"]))
        source = _render_once(Path(data_dir) / "shapes-inpaint" / f"{scene['prompt_id']}.png",
                              lambda: render_prompt(scene["prompt"], seed, *size))
        for policy in MASK_POLICIES:
            rows.append({"prompt_id": f"{scene['prompt_id']}-{policy}", "prompt": scene["prompt"],
                         "category": policy, "width": size[0], "height": size[1], "mask_policy": policy,
                         "scene_category": scene["category"], "source_path": source})
    return _frame(rows)


# ---------------------------------------------------------------------------------------------------------------
# The suite table


@dataclass(frozen=True)
class Suite:
    name: str
    task: str
    description: str


SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("shapes", TEXT_TO_IMAGE, "shapes world held-out set (prompts/shapes_heldout.csv), exact accuracy"),
    Suite("shapes-val", TEXT_TO_IMAGE, "shapes world validation set for checkpoint selection (prompts/shapes_val.csv)"),
    Suite("shapes-edit", EDITING, "shapes world held-out edits, 40 of each of 7 kinds (prompts/shapes_edits.csv), "
                                  "exact edit accuracy and preservation"),
    Suite("shapes-inpaint", INPAINTING, "shapes world held-out scenes x 6 mask policies, exact accuracy, FD"),
    Suite("drawbench", TEXT_TO_IMAGE, "DrawBench, 200 prompts in 11 categories (prompts/drawbench.csv)"),
    Suite("parti128", TEXT_TO_IMAGE, "the LADD paper's 128 human-study PartiPrompts (prompts/parti128.txt)"),
    Suite("parti", TEXT_TO_IMAGE, "all 1632 PartiPrompts (prompts/parti_prompts.tsv)"),
    Suite("pie-bench", EDITING, "PIE-Bench editing, 700 images (--data-dir; distributed on request)"),
    Suite("coco-inpaint", INPAINTING, "COCO val2017 inpainting with generated masks (--data-dir)"),
    Suite("custom", TEXT_TO_IMAGE, "your own prompts (--prompts FILE: text, one per line, or CSV with 'prompt')"),
]}


def is_shapes_suite(name: str) -> bool:
    """Suites scored by the shapes world's exact evaluator, CLIP and rendered ground truth."""
    return name in ("shapes", "shapes-val", "shapes-edit", "shapes-inpaint")


def parse_suites(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise BenchError(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    if not names:
        raise BenchError("--suite names no suite")
    return list(dict.fromkeys(names))


def load_suite(
    name: str,
    *,
    prompts_file: str | Path | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """The rows of suite `name` (the first `limit` of them), with a `suite` column."""
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if name == "custom" and prompts_file is None:
        raise BenchError("suite 'custom' needs --prompts FILE")
    loaders: dict[str, Callable[[], pd.DataFrame]] = {
        "shapes": read_shapes,
        "shapes-val": lambda: read_shapes(SHAPES_VAL_PATH),
        "drawbench": read_drawbench,
        "parti128": read_parti128,
        "parti": read_parti,
        "shapes-edit": lambda: read_shapes_edits(data_dir),
        "shapes-inpaint": lambda: read_shapes_inpaint(data_dir),
        "pie-bench": lambda: read_pie_bench(data_dir),
        "coco-inpaint": lambda: read_coco_captions(data_dir),
        "custom": lambda: read_prompts_file(prompts_file),
    }
    if name not in loaders:
        raise BenchError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    frame = loaders[name]()
    if limit is not None:
        frame = frame.head(limit)
    if "source_path" in frame:
        # Checked after --limit, so a partial download still serves a limited run.
        missing = [p for p in frame["source_path"] if not Path(p).is_file()]
        if missing:
            hint = PIE_BENCH_HINT if name == "pie-bench" else COCO_HINT
            raise SuiteDataError(f"{len(missing)} {name} image(s) missing, first {missing[0]}; {hint}")
    frame.insert(0, "suite", name)
    return frame.reset_index(drop=True)
