"""`accelerate launch -m bench.run` with two processes: each makes its share, the manifest is merged once."""

import json
import socket
import sys

import numpy as np
import pandas as pd
from PIL import Image

from tests.bench.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_batches(tiny_pipeline_dir, tmp_path, cli_env):
    import subprocess

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a blue square number {i}\n" for i in range(24)))
    env = dict(cli_env, CUDA_VISIBLE_DEVICES="")  # CPU processes (gloo) even on a machine with one GPU
    common = ["--model", tiny_pipeline_dir, "--prompts", prompts, "--batch-size", 4, "--no-score"]
    sharded = tmp_path / "sharded"
    # --multi_gpu selects accelerate's multi-process launcher (torchrun); without CUDA bench.run runs on the CPU.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "bench.run", *common, "--out", sharded]
    done = subprocess.run(list(map(str, launch)), env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(24 new, 2 process(es))" in done.stdout

    manifest = pd.read_parquet(sharded / "manifest.parquet")
    assert len(manifest) == 24 and not manifest.duplicated(["suite", "prompt_id", "sample_index"]).any()
    assert manifest.groupby("process_index").size().to_dict() == {0: 12, 1: 12}  # 6 batches, 3 each
    assert json.loads((sharded / "config.json").read_text())["num_processes"] == 2
    assert not (sharded / "manifest.parts").exists()

    # The same images as one process makes (seeds and batches do not depend on the number of processes).
    from bench.run import main

    single = tmp_path / "single"
    assert main(list(map(str, [*common, "--out", single]))) == 0
    for path in manifest["path"]:
        np.testing.assert_array_equal(np.asarray(Image.open(sharded / path)), np.asarray(Image.open(single / path)))
