"""SIGKILL in the middle of a real `python -m bench.run`, then the same command again."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
from PIL import Image

from tests.bench.conftest import REPO_ROOT, run_module

N_PROMPTS = 200
KILL_AFTER = 40  # images on disk when the first run is killed


def finished_images(folder):
    return sorted(folder.glob("images/custom/*.png"))  # temporaries are hidden (.name.png.PID.tmp)


def test_kill_9_then_rerun_finishes_without_redoing_work(tiny_pipeline_dir, tmp_path, cli_env):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a red circle number {i}\n" for i in range(N_PROMPTS)))
    out = tmp_path / "run"
    argv = ["--model", tiny_pipeline_dir, "--prompts", prompts, "--steps", 25, "--batch-size", 2, "--no-score",
            "--out", out]

    process = subprocess.Popen([sys.executable, "-m", "bench.run", *map(str, argv)], env=cli_env, cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(finished_images(out)) < KILL_AFTER and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed; raise N_PROMPTS or --steps"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL

    survivors = finished_images(out)
    assert KILL_AFTER <= len(survivors) < N_PROMPTS
    for path in survivors:  # no truncated PNG under a final name
        with Image.open(path) as image:
            image.load()
    before = {p.name: p.stat().st_mtime_ns for p in survivors}

    done = run_module("bench.run", *argv, env=cli_env)
    assert done.returncode == 0, done.stderr  # the killed run's lock died with it
    images = finished_images(out)
    assert len(images) == N_PROMPTS
    for path in images:  # every image of the finished run decodes
        with Image.open(path) as image:
            image.load()
    # nothing that was finished before the kill was written again
    assert {p.name: p.stat().st_mtime_ns for p in images if p.name in before} == before
    assert f"({N_PROMPTS - len(before)} new" in done.stdout

    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == N_PROMPTS  # exactly one row per image
    assert not manifest.duplicated(["suite", "prompt_id", "sample_index"]).any()
    assert sorted(manifest["path"]) == sorted(f"images/custom/{p.name}" for p in images)
    assert not list(out.rglob("*.tmp")) and not (out / "manifest.parts").exists()
