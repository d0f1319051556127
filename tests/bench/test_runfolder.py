"""The run folder: atomic writes, the journal's torn last line, manifest merging, reading and writing whole runs."""

import os

import pandas as pd
import pytest
from PIL import Image

from bench.errors import BenchError
from bench.runfolder import (CONFIG, MANIFEST, MANIFEST_COLUMNS, Journal, RunFolderError, atomic_write,
                             fake_prompts, fake_scores, journal_files, merge_manifest, read_run, read_runs,
                             remove_temporaries, save_image, write_fake_run)
from bench.seeding import sample_seed
from ladd.cli import UserError


def row(i, seconds=0.5, **extra):
    return {"suite": "custom", "prompt_id": f"{i:04d}", "prompt": f"p{i}", "category": "", "challenge": "",
            "sample_index": 0, "seed": i, "model": "m", "steps": 4, "guidance": 0.0, "width": 8, "height": 8,
            "path": f"images/custom/{i:04d}_0.png", "seconds_per_batch": seconds, **extra}


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary(tmp_path):
    target = tmp_path / "images" / "x.png"

    def explode(tmp):
        tmp.write_bytes(b"half a png")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, explode)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_temporaries_of_killed_writes_are_removed(tmp_path):
    (tmp_path / "images").mkdir()
    leftover = tmp_path / "images" / ".0001_0.png.123.abcd.tmp"
    leftover.write_bytes(b"\x89PNG truncated")
    save_image(Image.new("RGB", (4, 4)), tmp_path / "images" / "0000_0.png")
    assert remove_temporaries(tmp_path) == 1
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["0000_0.png"]


def test_merge_skips_a_torn_line_dedups_and_drops_rows_without_images(tmp_path):
    for i in range(3):
        save_image(Image.new("RGB", (8, 8)), tmp_path / row(i)["path"])
    first, second = Journal(tmp_path, 0), Journal(tmp_path, 1)
    first.append([row(0), row(1)])
    second.append([row(1, seconds=0.9), row(7)])  # a duplicate (last wins) and a row whose image is gone
    with open(second.path, "a") as handle:
        handle.write('{"suite": "custom", "prompt_id": "00')  # killed mid-line
    recovered = pd.DataFrame([row(2, seconds=float("nan"))])  # image on disk, journal line lost
    manifest = merge_manifest(tmp_path, recovered)
    assert manifest["prompt_id"].tolist() == ["0000", "0001", "0002"]
    assert manifest["seconds_per_batch"].tolist()[:2] == [0.5, 0.9]
    assert pd.isna(manifest["seconds_per_batch"].iloc[2])
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert journal_files(tmp_path) == []  # folded in and removed

    # Merging again (a rerun) keeps exactly one row per image.
    Journal(tmp_path).append([row(0, seconds=0.7)])
    again = merge_manifest(tmp_path)
    assert len(again) == 3 and again.loc[0, "seconds_per_batch"] == 0.7
    assert pd.read_parquet(tmp_path / "manifest.parquet").equals(again)


def test_a_fake_run_is_a_real_run_folder(tmp_path):
    prompts = fake_prompts(3)
    folder = write_fake_run(tmp_path / "run", "models/my-model", 4, prompts, samples=2, size=8,
                            tags={"student_depth": 2}, scores=fake_scores(prompts, "parti128", 0.3))
    manifest = pd.read_parquet(folder / MANIFEST)
    # the same columns, order and types as a manifest merged by bench.run
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert merge_manifest(folder).equals(manifest)
    assert all((folder / p).is_file() for p in manifest["path"]) and len(manifest) == 6
    assert manifest.loc[1, "seed"] == sample_seed(0, "parti128", "0000", 1)  # bench.run's seeds: runs pair up
    assert not (folder / "manifest.parts").exists()

    run = read_run(folder)
    assert run.name == "my-model-4step" and run.tags == {"student_depth": 2}
    assert run.scores["parti128"]["clip_score"] == 0.3 and run.manifest["prompt_id"].tolist()[:2] == ["0000"] * 2


def test_runs_with_one_name_get_their_folder_appended(tmp_path):
    prompts = fake_prompts(1)
    runs = read_runs([write_fake_run(tmp_path / name, "m", 1, prompts, samples=1, size=4) for name in ("a", "b")])
    assert [r.name for r in runs] == ["m-1step@a", "m-1step@b"]


@pytest.mark.parametrize("problem, message", [("missing", "run folder not found"), ("no_manifest", "no manifest"),
                                              ("bad_config", "config.json is not valid JSON"),
                                              ("bad_manifest", "not a readable parquet file"),
                                              ("short_manifest", "lacks columns: seed")])
def test_unreadable_runs_are_one_user_error(tmp_path, problem, message):
    folder = write_fake_run(tmp_path / "run", "m", 1, fake_prompts(1), samples=1, size=4)
    if problem == "missing":
        folder = tmp_path / "nope"
    elif problem == "no_manifest":
        (folder / MANIFEST).unlink()
    elif problem == "bad_config":
        (folder / CONFIG).write_text("{not json")
    elif problem == "bad_manifest":
        (folder / MANIFEST).write_bytes(b"not parquet")
    else:
        pd.read_parquet(folder / MANIFEST).drop(columns="seed").to_parquet(folder / MANIFEST)
    with pytest.raises(RunFolderError, match=message) as error:
        read_run(folder)
    assert isinstance(error.value, BenchError) and isinstance(error.value, UserError)


# ---------------------------------------------------------------------------------------------------------------
# The write lock and damaged images


def test_the_write_lock_names_its_holder_and_is_released_with_its_file(tmp_path):
    from bench.runfolder import RunFolderBusy, lock_run_folder

    held = lock_run_folder(tmp_path / "run")
    with pytest.raises(RunFolderBusy, match=rf"being written by another process \(pid {os.getpid()} "):
        lock_run_folder(tmp_path / "run")  # flock is per open file: a second open conflicts even in one process
    held.close()  # what the OS does for a process that exits or is killed
    lock_run_folder(tmp_path / "run").close()


def test_sizes_are_recorded_and_damage_is_found_by_size_or_by_decoding(tmp_path):
    from bench.runfolder import SIZE_COLUMN, damaged_images, recorded_sizes, remove_damaged

    folder = write_fake_run(tmp_path / "run", "m", 1, fake_prompts(3), samples=1, size=16)
    manifest = pd.read_parquet(folder / MANIFEST)
    paths = manifest["path"].tolist()
    assert manifest[SIZE_COLUMN].tolist() == [(folder / p).stat().st_size for p in paths]
    assert damaged_images(folder, paths) == []

    first = folder / paths[0]
    first.write_bytes(first.read_bytes()[:-20])  # truncated after it was recorded
    assert [p for p, _ in damaged_images(folder, paths)] == [paths[0]]
    assert "when written" in damaged_images(folder, paths)[0][1]

    # A manifest from before sizes were recorded: the image is decoded instead.
    manifest.drop(columns=SIZE_COLUMN).to_parquet(folder / MANIFEST)
    assert recorded_sizes(folder) == {}
    problems = damaged_images(folder, paths)
    assert [p for p, _ in problems] == [paths[0]] and "cannot be decoded" in problems[0][1]
    assert remove_damaged(folder, paths) == problems and not first.exists()
    assert merge_manifest(folder)[SIZE_COLUMN].tolist() == [(folder / p).stat().st_size for p in paths[1:]]
