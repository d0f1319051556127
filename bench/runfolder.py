"""The run folder `results/RUN/` (docs/architecture.md): atomic file writes, the per-process journal, the manifest.

Crash safety rests on two rules:

1. Every file is written to a temporary name in the same folder and `os.replace`d into place, so a file that
   exists under its final name is complete (a SIGKILL leaves at most a `.*.tmp` file, removed on the next run).
   No fsync: the goal is surviving a killed process, not a power cut, and fsync per image would cost more than
   the 5% overhead budget on small models.
2. After each batch's images are in place, each process appends that batch's rows as JSON lines to its own
   journal under `manifest.parts/`. `merge_manifest` folds the journals into `manifest.parquet`, one row per
   (suite, prompt_id, sample_index) whose image exists, then deletes the journals it folded in.

Each row records its PNG's size (`file_bytes`), so damage after the fact (a truncated or overwritten file) is found
by a `stat`, without decoding every image: `damaged_images` lists what a resume must make again and what
`bench.score` refuses to score. One writer at a time: `lock_run_folder` takes an OS lock (`fcntl.flock`) on the
folder's `.lock` file for the writer's life; the OS drops it when the process dies, so a kill -9 leaves no stale
lock behind.

This module is the only owner of the format: file and column names, the writers, the reader of whole runs
(`read_run(s)`, used by `annotate.study` and `bench.report`) and `write_fake_run` (tests and `bench.demo`), which
goes through the same writers as `bench.run`.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.seeding import sample_seed

MANIFEST = "manifest.parquet"
CONFIG = "config.json"
SCORES = "scores.json"
PARTS_DIR = "manifest.parts"
IMAGES_DIR, SOURCES_DIR, MASKS_DIR = "images", "sources", "masks"
TMP_SUFFIX = ".tmp"
LOCK = ".lock"  # holds the pid of the process writing the folder; locked with flock while it writes
SIZE_COLUMN = "file_bytes"  # the PNG's size when it was written

KEY = ["suite", "prompt_id", "sample_index"]
# docs/architecture.md's columns, in its order; editing/inpainting rows add more after these.
MANIFEST_COLUMNS = ["suite", "prompt_id", "prompt", "category", "challenge", "sample_index", "seed", "model",
                    "steps", "guidance", "width", "height", "path", "seconds_per_batch"]


class RunFolderError(BenchError):
    """A path that is not a readable run folder (missing, no manifest, unreadable files)."""


class RunFolderBusy(BenchError):
    """Another live process holds the run folder's write lock."""


def image_path(suite: str, prompt_id: str, sample_index: int) -> str:
    """Where an image lives, relative to the run folder (the manifest's `path`)."""
    return f"{IMAGES_DIR}/{suite}/{prompt_id}_{sample_index}.png"


def _temporary(path: Path) -> Path:
    # Hidden, unique per process and call: concurrent shards never share a temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def atomic_write(path: str | Path, write) -> None:
    """Call `write(temporary_path)`, then move the result over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# zlib level 1: lossless like any level, about 4x faster to encode than Pillow's default 6 on 1024 px images
# (measured 56 ms vs 229 ms) for files about a quarter larger; encoding would otherwise rival a few-step model.
PNG_COMPRESS_LEVEL = 1


def save_image(image, path: str | Path) -> int:
    """Write a PNG atomically; returns its size in bytes (recorded in the manifest to find damage later)."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL))
    return os.stat(path).st_size


def write_json(path: str | Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> dict:
    """The file's JSON object, `{}` when it does not exist; a RunFolderError when it is not JSON."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None


def remove_temporaries(run_dir: str | Path) -> int:
    """Delete leftovers of killed writes. Call only while no other process writes into the folder."""
    count = 0
    for tmp in Path(run_dir).rglob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


class Journal:
    """Append-only JSON-lines record of finished images, one file per process and run."""

    def __init__(self, run_dir: str | Path, rank: int = 0):
        folder = Path(run_dir) / PARTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.path = folder / f"rank{rank:03d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"

    def append(self, rows: list[dict]) -> None:
        # One write per batch; a kill mid-write leaves at most one unparseable last line, skipped on reading.
        text = "".join(json.dumps(row, default=_json_default) + "\n" for row in rows)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()


class BatchWriter:
    """Saves each batch's PNGs, then appends its journal rows, on one background thread.

    PNG encoding (Pillow releases the GIL) then overlaps the next batch's denoising instead of adding to it. One
    worker keeps the order "images, then their rows", so the journal never names an image that is not on disk; at
    most `max_pending` batches wait in memory. `close()` waits for every write and re-raises a writer error.
    """

    def __init__(self, journal: Journal, max_pending: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self.journal = journal
        self.max_pending = max_pending
        self.pending = []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-writer")

    def _write(self, images: list[tuple], rows: list[dict]) -> None:
        for (image, path), row in zip(images, rows):
            row[SIZE_COLUMN] = save_image(image, path)
        self.journal.append(rows)

    def submit(self, images: list[tuple], rows: list[dict]) -> None:
        while len(self.pending) >= self.max_pending:
            self.pending.pop(0).result()
        self.pending.append(self.executor.submit(self._write, images, rows))

    def close(self) -> None:
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending = []
            self.executor.shutdown(wait=True)


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def journal_files(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / PARTS_DIR).glob("*.jsonl"))


def read_journal_rows(files: list[Path]) -> list[dict]:
    rows = []
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the torn last line of a killed process; its image is recovered from the plan
    return rows


def read_manifest(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = pd.read_parquet(path)
    frame["prompt_id"] = frame["prompt_id"].astype(str)
    return frame


def _order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    for column in MANIFEST_COLUMNS:
        if column not in frame:
            frame[column] = pd.NA
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    return frame[MANIFEST_COLUMNS + extra]


def _normalise_types(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("suite", "prompt_id", "prompt", "category", "challenge", "model", "path"):
        frame[column] = frame[column].fillna("").astype(str)
    for column in ("sample_index", "seed", "steps", "width", "height"):
        frame[column] = frame[column].astype("int64")
    for column in ("guidance", "seconds_per_batch"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    if "process_index" in frame:
        frame["process_index"] = pd.to_numeric(frame["process_index"], errors="coerce").fillna(-1).astype(int)
    for column in frame.columns[len(MANIFEST_COLUMNS):]:
        values = frame[column].dropna()
        if len(values) and values.map(lambda v: isinstance(v, str)).all():
            frame[column] = frame[column].fillna("")  # text columns of other suites: "" as in category/challenge
    return frame


def merge_manifest(run_dir: str | Path, recovered: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fold journals (and `recovered` rows for images that exist but whose journal line was lost) into
    manifest.parquet: exactly one row per image file that exists. Call from one process only."""
    run_dir = Path(run_dir)
    files = journal_files(run_dir)
    parts = [read_manifest(run_dir)]
    if recovered is not None and len(recovered):
        parts.insert(0, recovered)  # lowest priority: a journal row carries the measured seconds_per_batch
    journal = read_journal_rows(files)
    if journal:
        parts.append(pd.DataFrame(journal))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = pd.concat(parts, ignore_index=True)
    frame["prompt_id"] = frame["prompt_id"].astype(str)
    frame["sample_index"] = frame["sample_index"].astype("int64")
    frame = frame.drop_duplicates(KEY, keep="last")
    frame = frame[[(run_dir / p).is_file() for p in frame["path"]]].copy()
    # Rows of older runs (or rebuilt after a kill) get the size of the file as it is now: the caller has checked
    # those files (bench.run decodes any image without a recorded size before it resumes).
    recorded = frame[SIZE_COLUMN] if SIZE_COLUMN in frame else pd.Series(pd.NA, index=frame.index)
    frame[SIZE_COLUMN] = pd.Series([int(n) if pd.notna(n) else os.stat(run_dir / p).st_size
                                    for p, n in zip(frame["path"], recorded)], index=frame.index, dtype="int64")
    frame = _normalise_types(_order_columns(frame)).sort_values(KEY).reset_index(drop=True)
    atomic_write(run_dir / MANIFEST, lambda tmp: frame.to_parquet(tmp, index=False))
    for file in files:  # folded in: a kill before this point only leaves duplicates, dropped next time
        file.unlink(missing_ok=True)
    parts_dir = run_dir / PARTS_DIR
    if parts_dir.is_dir() and not any(parts_dir.iterdir()):
        parts_dir.rmdir()
    return frame


# ---------------------------------------------------------------------------------------------------------------
# One writer per run folder, and damaged images


def _try_lock(handle, run_dir: Path) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        for _ in range(20):  # the holder writes its pid just after locking
            handle.seek(0)
            holder = handle.read().strip()
            if holder:
                break
            time.sleep(0.01)
        handle.close()
        raise RunFolderBusy(f"{run_dir} is being written by another process (pid {holder or 'unknown'}); wait "
                            f"for it to finish or pass another --out") from None


def lock_run_folder(run_dir: str | Path, what: str = "bench.run"):
    """Take the run folder's write lock (creating the folder); returns the open lock file, which holds the lock
    until it is closed (use it as a context manager) or the process ends.

    A second writer fails at once with a RunFolderBusy naming the holder's pid. The lock is `flock` on `.lock`:
    the OS releases it when the holder exits or is killed, so there is never a stale lock to clean up.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK, "a+", encoding="utf-8")
    _try_lock(handle, run_dir)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {what}\n")
    handle.flush()
    return handle


def check_not_locked(run_dir: str | Path) -> None:
    """Fail now with RunFolderBusy if another process holds the folder's write lock; creates nothing. (A cheap
    early refusal before a long model load; `lock_run_folder` is what protects the writes.)"""
    try:
        handle = open(Path(run_dir) / LOCK, encoding="utf-8")
    except FileNotFoundError:
        return
    _try_lock(handle, Path(run_dir))
    handle.close()


def decode_problem(path: str | Path | bytes) -> str | None:
    """None when `path` (a file, or an image file's bytes) is a complete image that decodes; else what is wrong,
    in a few words."""
    from PIL import Image

    def source():
        return io.BytesIO(path) if isinstance(path, bytes) else path

    try:
        with Image.open(source()) as image:
            image.verify()  # chunk structure and CRCs: finds a PNG cut after its pixel data
        with Image.open(source()) as image:
            image.load()  # full decode: finds damaged pixel data
    except FileNotFoundError:
        return "missing"
    except (OSError, SyntaxError, ValueError) as error:  # PIL's decode errors (UnidentifiedImageError is OSError)
        return f"cannot be decoded: {' '.join(str(error).split()) or type(error).__name__}"
    return None


def recorded_sizes(run_dir: str | Path) -> dict[str, int]:
    """path → size in bytes as written, from the manifest and the journals (later records win)."""
    run_dir = Path(run_dir)
    sizes = {}
    manifest = read_manifest(run_dir)
    if SIZE_COLUMN in manifest:
        sizes.update((p, int(n)) for p, n in zip(manifest["path"], manifest[SIZE_COLUMN]) if pd.notna(n))
    for row in read_journal_rows(journal_files(run_dir)):
        if row.get(SIZE_COLUMN) is not None and row.get("path"):
            sizes[row["path"]] = int(row[SIZE_COLUMN])
    return sizes


def damaged_images(run_dir: str | Path, paths: Iterable[str], sizes: dict[str, int] | None = None,
                   decode_unrecorded: bool = True) -> list[tuple[str, str]]:
    """(path, what is wrong) for each existing image of `paths` that differs from its recorded size or, where no
    size is recorded and `decode_unrecorded`, does not decode. Missing files are not listed (they are not made yet)."""
    run_dir = Path(run_dir)
    sizes = recorded_sizes(run_dir) if sizes is None else sizes
    damaged = []
    for path in paths:
        try:
            size = os.stat(run_dir / path).st_size
        except FileNotFoundError:
            continue
        if path in sizes:
            if size != sizes[path]:
                damaged.append((path, f"{size} bytes, {sizes[path]} when written"))
        elif decode_unrecorded and (problem := decode_problem(run_dir / path)):
            damaged.append((path, problem))
    return damaged


def remove_damaged(run_dir: str | Path, paths: Iterable[str]) -> list[tuple[str, str]]:
    """Delete the damaged images among `paths`, so a resumed run makes them again. Call under the run's lock."""
    damaged = damaged_images(run_dir, paths)
    for path, _ in damaged:
        (Path(run_dir) / path).unlink(missing_ok=True)
    return damaged


# ---------------------------------------------------------------------------------------------------------------
# Whole runs: read by the study builder and the report


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


def is_run_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


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
        raise RunFolderError(f"run folder not found: {folder}")
    if not is_run_folder(folder):
        raise RunFolderError(f"not a run folder (no {MANIFEST}): {folder}")
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as error:  # pyarrow's errors derive from these
        raise RunFolderError(f"{folder / MANIFEST} is not a readable parquet file ({error})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise RunFolderError(f"{folder / MANIFEST} lacks columns: {', '.join(missing)}")
    for column in ("category", "challenge"):
        manifest[column] = manifest[column].fillna("").astype(str)
    config = read_json(folder / CONFIG)
    return Run(run_name(config, manifest, folder), folder.resolve(), config, manifest, read_json(folder / SCORES))


def read_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Read runs; two runs with the same derived name fall back to `<name>@<folder>` so names stay unique."""
    runs = [read_run(p) for p in paths]
    counts = pd.Series([r.name for r in runs]).value_counts()
    for run in runs:
        if counts[run.name] > 1:
            run.name = f"{run.name}@{run.dir.name}"
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Whole runs written at once: fake runs for tests and the demo (bench.demo)


def write_run(out: str | Path, images: Iterable[tuple], config: dict, scores: dict | None = None) -> Path:
    """A complete run folder from (PIL image, manifest row) pairs, through bench.run's own writers: atomic PNGs,
    the journal folded into manifest.parquet by `merge_manifest` (so columns and types are a real run's)."""
    out = Path(out)
    rows = []
    for image, row in images:
        rows.append({**row, SIZE_COLUMN: save_image(image, out / row["path"])})
    Journal(out).append(rows)
    merge_manifest(out)
    write_json(out / CONFIG, config)
    if scores is not None:
        write_json(out / SCORES, scores)
    return out


FAKE_CATEGORIES = ("Animals", "Food & Beverage", "Vehicles", "Artifacts")
FAKE_CHALLENGES = ("Simple Detail", "Fine-grained Detail", "Quantity")
_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
_SHAPES = ("circle", "square", "triangle")


def fake_prompts(n: int) -> pd.DataFrame:
    """`n` Parti-style prompts with categories and challenges cycling, ids zero-padded like a real suite's."""
    rows = []
    for i in range(n):
        colour, shape = _COLOURS[i % len(_COLOURS)], _SHAPES[(i // len(_COLOURS)) % len(_SHAPES)]
        article = "an" if colour[0] in "aeiou" else "a"
        rows.append({"prompt_id": f"{i:04d}", "prompt": f"{article} {colour} {shape} number {i}",
                     "category": FAKE_CATEGORIES[i % len(FAKE_CATEGORIES)],
                     "challenge": FAKE_CHALLENGES[i % len(FAKE_CHALLENGES)]})
    return pd.DataFrame(rows)


def fake_image(prompt: str, seed: int, sharpness: float, size: int):
    """A disk on a background, both from (prompt, seed); a less sharp model draws a smaller disk. The images
    only need to be real, distinct files."""
    from PIL import Image, ImageDraw

    h = zlib.crc32(f"{prompt}|{seed}".encode())
    background = (h & 0xFF, (h >> 8) & 0xFF, (h >> 16) & 0xFF)
    image = Image.new("RGB", (size, size), background)
    margin = int(size * (0.45 - 0.3 * sharpness))
    ImageDraw.Draw(image).ellipse([margin, margin, size - margin, size - margin],
                                  fill=tuple(255 - c for c in background))
    return image


def write_fake_run(out: str | Path, model: str, steps: int, prompts: pd.DataFrame, samples: int = 2,
                   suite: str = "parti128", sharpness: float = 1.0, size: int = 32, guidance: float = 0.0,
                   tags: dict | None = None, scores: dict | None = None, seed: int = 0) -> Path:
    """A run of drawn images; seeds are bench.run's (`sample_seed`), so fake runs of one suite pair up."""
    def images():
        for prompt in prompts.to_dict("records"):
            for k in range(samples):
                image_seed = sample_seed(seed, suite, prompt["prompt_id"], k)
                yield fake_image(prompt["prompt"], image_seed, sharpness, size), {
                    "suite": suite, "prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"],
                    "category": prompt.get("category", ""), "challenge": prompt.get("challenge", ""),
                    "sample_index": k, "seed": image_seed, "model": model, "steps": steps, "guidance": guidance,
                    "width": size, "height": size, "path": image_path(suite, prompt["prompt_id"], k),
                    "seconds_per_batch": 0.01 * steps}

    config = {"model": model, "suite": [suite], "samples_per_prompt": samples, "steps": steps,
              "guidance": guidance, "seed": seed, "tags": tags or {}}
    return write_run(out, images(), config, scores)


def fake_scores(prompts: pd.DataFrame, suite: str, clip: float) -> dict:
    """A well-formed scores.json body with a per-category CLIP score around `clip` (fake numbers)."""
    per_category = {c: {"clip_score": round(clip + 0.002 * i, 4)}
                    for i, c in enumerate(sorted(prompts["category"].unique()))}
    return {suite: {"clip_score": clip, "per_category": per_category}}


def lora_label(folder: str | Path) -> str:
    """The name of a run's merged LoRA (its `lora` tag) for folder names and reports: `ladd.dpo` writes OUT/lora,
    so that one is named by OUT."""
    folder = Path(str(folder))
    return folder.parent.name if folder.name == "lora" else folder.name
