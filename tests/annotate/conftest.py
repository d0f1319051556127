"""Fake run folders (docs/architecture.md format) and a study built from them."""

import pytest

from annotate import db
from annotate.study import create_study
from bench.runfolder import fake_prompts, read_runs, write_fake_run
from ladd.cli import run_cli

MODEL_NAMES = ("shapes-turbo", "shapes-sd3", "shapes-lcm")  # must never reach the browser


@pytest.fixture
def run_dirs(tmp_path):
    prompts = fake_prompts(8)
    return [write_fake_run(tmp_path / "results" / "turbo1", "shapes-turbo", 1, prompts, samples=2, size=16,
                           sharpness=0.4),
            write_fake_run(tmp_path / "results" / "teacher50", "shapes-sd3", 50, prompts, samples=2, size=16),
            write_fake_run(tmp_path / "results" / "lcm4", "shapes-lcm", 4, prompts, samples=2, size=16,
                           sharpness=0.7)]


@pytest.fixture
def study_db(tmp_path, run_dirs):
    """Two model pairs x 8 prompts x 2 views = 32 comparisons, in 4 batches of 8, each with 1 gold check."""
    path = tmp_path / "study.db"
    engine = db.make_engine(str(path), must_exist=False)
    model, *baselines = read_runs(run_dirs)
    create_study(engine, "test", model, baselines, "parti128", samples_per_prompt=2, views=2, batch_size=8,
                 gold_per_batch=1, seed=0)
    engine.dispose()
    return path


@pytest.fixture
def cli(capsys):
    """Run a command module as its console entry does (`ladd.cli.run_cli`); returns (exit code, stdout, stderr)."""

    def run(module, *argv):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(module.main, module.PROG, [str(a) for a in argv])
        captured = capsys.readouterr()
        return exit_info.value.code, captured.out, captured.err

    return run
