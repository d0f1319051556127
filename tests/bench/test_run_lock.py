"""Two `python -m bench.run` processes on one --out: the second exits 2 at once naming the first's pid; after the
first is killed with SIGKILL the OS has released the lock and the run resumes.

The first run is paused with SIGSTOP once it writes, so however fast the machine it is still mid-run (and still
holding the lock) while the second one starts."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.bench.conftest import REPO_ROOT, run_module

PROG = "python -m bench.run"


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_runs(tiny_pipeline_dir, tmp_path, cli_env):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a green square number {i}\n" for i in range(200)))
    out = tmp_path / "run"
    argv = ["--model", tiny_pipeline_dir, "--prompts", prompts, "--steps", 25, "--batch-size", 2, "--no-score",
            "--out", out]
    first = subprocess.Popen([sys.executable, "-m", "bench.run", *map(str, argv)], env=cli_env, cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("images/custom/*.png")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)
        assert first.poll() is None and list(out.glob("images/custom/*.png")), "the first run never started writing"

        started = time.monotonic()
        second = run_module("bench.run", *argv, env=cli_env, timeout=120)
        seconds = time.monotonic() - started
        assert first.poll() is None
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), second.stderr[-3000:]
        assert f"being written by another process (pid {first.pid} " in lines[0] and str(out) in lines[0]
        assert seconds < 60  # refused before loading the model or generating anything
        journals = list((out / "manifest.parts").glob("*.jsonl"))
        assert all(f"-{first.pid}-" in j.name for j in journals)  # the second wrote no journal
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)  # a stopped process dies of SIGKILL too
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    # No stale lock after a kill: the same run resumes at once (the first 2 prompts are long finished).
    resumed = run_module("bench.run", *argv[:-1], out, "--limit", 2, env=cli_env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(0 new" in resumed.stdout
