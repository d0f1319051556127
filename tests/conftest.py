"""Shared fixtures: the smoke zoo (the real build's code at tiny sizes) and synthetic LADD data made from it."""

from pathlib import Path

import pytest

from ladd.shapes.build import main as build_main
from ladd.synth import main as synth_main


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
def smoke_latents(smoke_teacher, tmp_path_factory) -> Path:
    """Synthetic latents from the smoke teacher: 3 shards, one per aspect bucket."""
    out = tmp_path_factory.mktemp("synth")
    args = ["--model", str(smoke_teacher), "--out", str(out), "--num", "24", "--shard-size", "8",
            "--batch-size", "8", "--steps", "2"]
    assert synth_main(args) == 0
    return out
