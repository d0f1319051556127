"""A PNG damaged after it was recorded: `bench.score` names it in one line (exit 2) and a resumed `bench.run`
makes it again, pixel for pixel."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.errors import BenchError
from bench.run import main as run_main
from bench.runfolder import MANIFEST, SIZE_COLUMN, fake_prompts, write_fake_run
from bench.score import Scorers, score_run
from tests.bench.conftest import ToyCLIP, run_module


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_a_truncated_png_is_named_by_score_and_made_again_by_resume(tiny_pipeline_dir, tiny_clip_dir, tmp_path,
                                                                   cli_env, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a red circle number {i}\n" for i in range(4)))
    out = tmp_path / "run"
    argv = list(map(str, ["--model", tiny_pipeline_dir, "--prompts", prompts, "--batch-size", 2, "--no-score",
                          "--out", out]))
    assert run_main(argv) == 0
    manifest = pd.read_parquet(out / MANIFEST)
    victim = out / manifest["path"].iloc[1]
    original = pixels(victim)
    assert manifest[SIZE_COLUMN].iloc[1] == victim.stat().st_size
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # e.g. a copy cut short
    untouched = {p: (out / p).stat().st_mtime_ns for p in manifest["path"] if out / p != victim}

    scored = run_module("bench.score", out, "--clip", tiny_clip_dir, env=cli_env)
    assert scored.returncode == 2, scored.stderr[-2000:]
    lines = scored.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m bench.score: error: "), scored.stderr[-2000:]
    assert str(victim) in lines[0] and "damaged" in lines[0] and "rerun the bench.run command" in lines[0]
    assert not (out / "scores.json").exists()

    capsys.readouterr()
    assert run_main(argv) == 0
    captured = capsys.readouterr()
    assert "(1 new" in captured.out and "1 damaged image(s) will be made again" in captured.err
    np.testing.assert_array_equal(pixels(victim), original)  # the same image as before the damage
    assert {p: (out / p).stat().st_mtime_ns for p in untouched} == untouched  # nothing else was redone
    after = pd.read_parquet(out / MANIFEST)
    assert len(after) == 4 and after[SIZE_COLUMN].iloc[1] == victim.stat().st_size


def test_score_names_an_image_that_does_not_decode(tmp_path):
    """Same size as recorded (so the cheap check passes) but not an image: decoding names it."""
    folder = write_fake_run(tmp_path / "run", "m", 1, fake_prompts(2), samples=1, size=8)
    victim = folder / pd.read_parquet(folder / MANIFEST)["path"].iloc[0]
    victim.write_bytes(b"x" * victim.stat().st_size)
    with pytest.raises(BenchError, match="cannot be decoded") as error:
        score_run(folder, Scorers(clip_backbones={"parti128": ToyCLIP()}))
    assert str(victim) in str(error.value)
