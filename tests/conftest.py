"""Shared fixtures: the smoke zoo (the real build's code at tiny sizes) and synthetic LADD data made from it."""

import os

# OpenMP threads that spin while they wait make torch several times slower on a CPU shared with other jobs, such as
# this suite's subprocesses; sleeping threads cost little on an idle machine. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from ladd.cli import run_cli  # noqa: E402
from ladd.shapes.build import main as build_main  # noqa: E402
from ladd.shapes.prompts import main as prompts_main  # noqa: E402
from ladd.synth import main as synth_main  # noqa: E402


def cli_exit_code(main, argv) -> int:
    """A command's exit status as `python -m ...` gives it (a user error: one line on stderr, 2)."""
    with pytest.raises(SystemExit) as exit:
        run_cli(main, "prog", argv)
    return exit.value.code


@pytest.fixture(scope="session")
def smoke_zoo(tmp_path_factory) -> tuple[Path, Path]:
    """(models folder with shapes-clip/ and shapes-sd3/, build work folder)."""
    out = tmp_path_factory.mktemp("zoo")
    work = tmp_path_factory.mktemp("zoo-work")
    assert build_main(["--smoke", "--out", str(out), "--work", str(work)]) == 0
    return out, work


@pytest.fixture(scope="session")
def smoke_teacher(smoke_zoo) -> Path:
    return smoke_zoo[0] / "shapes-sd3"


@pytest.fixture(scope="session")
def smoke_prompts(tmp_path_factory) -> Path:
    """32 shapes prompts over the three aspect buckets (16 square, 8 landscape, 8 portrait)."""
    path = tmp_path_factory.mktemp("prompts") / "prompts.csv"
    assert prompts_main(["--num", "32", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def smoke_latents(smoke_teacher, smoke_prompts, tmp_path_factory) -> Path:
    """Synthetic latents from the smoke teacher: 4 shards of 8 (two square, one per other bucket)."""
    out = tmp_path_factory.mktemp("synth")
    args = ["--model", str(smoke_teacher), "--prompts", str(smoke_prompts), "--out", str(out), "--shard-size", "8",
            "--batch-size", "8", "--steps", "2"]
    assert synth_main(args) == 0
    return out
