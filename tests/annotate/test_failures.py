"""What can go wrong around the study, through the real commands (subprocesses): a damaged, locked or foreign
database is one line naming the file and exit 2, and is never changed; images that cannot be shown are refused by
`create` and reported by `info`; `create` killed with SIGKILL and run again leaves one complete study."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from annotate import db
from bench.runfolder import fake_prompts, write_fake_run

REPO = Path(__file__).resolve().parents[2]


def command(module: str, *args, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **env})


def one_line_error(done: subprocess.CompletedProcess, module: str, *fragments) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m {module}: error: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def file_state(path: Path):
    """The file's bytes and its SQLite companions (-wal, -shm, -journal): what 'unchanged' means."""
    return path.read_bytes(), sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    noise = random.Random(0)
    for start in range(4096, len(data), 4096):
        data[start + 100:start + 4000] = bytes(noise.getrandbits(8) for _ in range(3900))
    path.write_bytes(bytes(data))


def report_args(database, tmp_path):
    return ["--study", database, "--out", tmp_path / "report"]


@pytest.mark.parametrize("damage, words", [("pages", "is corrupted"), ("header", "is not a SQLite database")])
def test_a_damaged_database_is_one_line_in_every_command(study_db, tmp_path, damage, words):
    if damage == "pages":
        corrupt(study_db)
    else:
        study_db.write_bytes(b"\0" * 16 + study_db.read_bytes()[16:])
    before = file_state(study_db)
    for module, args in (("annotate.study", ["info", "--db", study_db]),
                         ("annotate.study", ["export", "--db", study_db, "--out", tmp_path / "votes.csv"]),
                         ("annotate.simulate", ["--db", study_db, "--annotators", 1]),
                         ("bench.report", report_args(study_db, tmp_path))):
        one_line_error(command(module, *args), module, str(study_db), words)
    # Not one byte of the file changes. (A study database is in WAL mode, and SQLite's read-only opening of one
    # may leave its -wal/-shm companions, as any reader's would.)
    assert file_state(study_db)[0] == before[0]
    assert not (tmp_path / "report").exists() and not (tmp_path / "votes.csv").exists()


def test_a_write_lock_held_past_the_timeout_is_one_line(study_db, run_dirs):
    holder = sqlite3.connect(study_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        done = command("annotate.simulate", "--db", study_db, "--annotators", 1, ANNOTATE_DB_TIMEOUT="0.3")
        one_line_error(done, "annotate.simulate", str(study_db), "is locked by another process", "waited 0.3 s")
        done = command("annotate.study", "create", "--runs", *run_dirs[:2], "--samples-per-prompt", 2,
                       "--name", "second", "--db", study_db, ANNOTATE_DB_TIMEOUT="0.3")
        one_line_error(done, "annotate.study", "is locked by another process")
        assert time.monotonic() - started < 60
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    engine = db.make_engine(str(study_db))
    assert len(db.study_comparisons(engine, db.get_study(engine)["id"])) == 36  # the study as it was
    assert len(db.export_votes(engine, 1)) == 0


@pytest.mark.parametrize("kind", ["other_database", "empty_file", "text_file"])
def test_a_file_that_is_not_a_study_is_refused_and_left_as_it_was(tmp_path, run_dirs, kind):
    path = tmp_path / "notes.db"
    if kind == "other_database":
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE notes (text TEXT)")
            other.execute("INSERT INTO notes VALUES ('keep me')")
        other.close()
    elif kind == "empty_file":
        path.touch()
    else:
        path.write_text("a shopping list\n")
    before = file_state(path)
    words = {"other_database": "is not a study database (it has tables notes",
             "empty_file": "is empty, not a study database",
             "text_file": "is not a SQLite database"}[kind]
    for module, args in (("annotate.study", ["info", "--db", path]),
                         ("annotate.simulate", ["--db", path]),
                         ("bench.report", report_args(path, tmp_path))):
        one_line_error(command(module, *args), module, str(path), words)
    created = command("annotate.study", "create", "--runs", *run_dirs[:2], "--samples-per-prompt", 2, "--db", path)
    if kind == "empty_file":  # an empty file is a fine place for a new study
        assert created.returncode == 0, created.stderr
        assert path.stat().st_size > 0
    else:
        one_line_error(created, "annotate.study", str(path), words)
        assert file_state(path) == before
        if kind == "other_database":
            with sqlite3.connect(path) as other:
                assert other.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # never switched to WAL
            other.close()


def test_info_counts_votes_per_question_and_reports_missing_images(study_db, tmp_path):
    engine = db.make_engine(str(study_db))
    study = db.get_study(engine)
    annotator = db.register_annotator(engine, study["id"], "p1")
    items = db.batch_items(engine, study["id"], annotator["batch"])
    for item in items["id"][:3]:
        db.record_vote(engine, annotator["id"], int(item), "alignment", "left")
    db.record_vote(engine, annotator["id"], int(items["id"].iloc[0]), "quality", "right")
    done = command("annotate.study", "info", "--db", study_db)
    assert done.returncode == 0, done.stderr
    assert "votes: 3 on prompt alignment and 1 on image quality, from 1 annotator(s), 0 of whom finished" in done.stdout
    assert " of 64 votes" not in done.stdout and "images: all " in done.stdout
    gone = Path(study["root"]) / items["left_path"].iloc[1]
    gone.unlink()
    done = command("annotate.study", "info", "--db", study_db)
    assert "images: 1 missing or damaged since the study was created" in done.stdout
    assert f"first {gone} (missing)" in done.stdout


def test_create_decodes_every_image_first(tmp_path, run_dirs):
    victim = sorted((run_dirs[1] / "images" / "parti128").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    path = tmp_path / "study.db"
    done = command("annotate.study", "create", "--runs", *run_dirs[:2], "--samples-per-prompt", 2, "--db", path)
    one_line_error(done, "annotate.study", "1 image(s) of the runs cannot be shown", str(victim), "cannot be decoded")
    assert not path.exists()


@pytest.mark.slow
def test_create_killed_with_sigkill_then_rerun_makes_one_complete_study(tmp_path):
    prompts = fake_prompts(200)  # 6,400 comparisons: the write transaction lasts long enough to be killed in
    runs = [write_fake_run(tmp_path / n, n, 1, prompts, samples=2, size=8) for n in ("m", "b1", "b2")]
    args = ["create", "--runs", *runs, "--samples-per-prompt", 2, "--views", 16, "--batch-size", 40]
    reference = tmp_path / "reference.db"
    assert command("annotate.study", *args, "--db", reference).returncode == 0
    path = tmp_path / "study.db"

    process = subprocess.Popen([sys.executable, "-m", "annotate.study", *map(str, args), "--db", str(path)], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)  # the file appears when the one write transaction begins
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL, "create finished before it could be killed"
    killed = sqlite3.connect(path)
    assert killed.execute("SELECT count(*) FROM sqlite_master WHERE name = 'studies'").fetchone()[0] == 0
    killed.close()  # nothing of the killed transaction is visible

    done = command("annotate.study", *args, "--db", path)
    assert done.returncode == 0, done.stderr
    again = command("annotate.study", *args, "--db", path)  # and once more: already complete, nothing added
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr

    def contents(database):
        engine = db.make_engine(str(database))
        study = db.get_study(engine)
        return db.study_comparisons(engine, study["id"]).drop(columns=["id", "study_id"])

    made, expected = contents(path), contents(reference)
    assert len(made) == len(expected) == 200 * 16 * 2 + 2 * made["batch"].nunique()  # comparisons + 2 gold each
    pd.testing.assert_frame_equal(made, expected)
    root = Path(db.get_study(db.make_engine(str(path)))["root"])
    for relative in pd.concat([made["left_path"], made["right_path"]]).unique():
        with Image.open(root / relative) as image:
            image.load()  # every image of the study decodes
