"""`python -m bench.report.coverage` at small scale: simulated studies through the real study database, the
report's statistics, and the coverage of their intervals measured against the known truth (docs/findings.md)."""

import pandas as pd
import pytest

from bench.report import coverage
from tests.conftest import cli_exit_code


def command(*argv):
    return coverage.main([str(a) for a in argv])


def test_true_ratings_follow_the_win_rates():
    ratings = coverage.true_ratings({"b1": 0.8, "b2": 0.5})
    assert ratings["model"] - ratings["b1"] == pytest.approx(400 * 0.6020599913, abs=1e-6)  # log10(4)
    assert ratings["model"] == pytest.approx(ratings["b2"]) and sum(ratings.values()) == pytest.approx(3000)
    assert coverage.true_order({"b1": 0.8, "b2": 0.6}) == ["model", "b2", "b1"]
    assert coverage.clopper_pearson(190, 200) == pytest.approx((0.9100, 0.9757), abs=5e-4)


def test_coverage_at_small_scale_and_resume(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "coverage.csv"
    args = ["--prompts", 16, "--samples-per-prompt", 2, "--views", 2, "--prefer", "0.6,0.85", "--careless", 1,
            "--bootstrap", 400, "--bt-bootstrap", 40, "--work", work, "--out", out]
    assert command("--studies", 40, *args) == 0
    summary = pd.read_csv(out).set_index(["what", "level", "question", "baseline"])
    studies = pd.read_csv(tmp_path / "coverage-studies.csv")
    assert len(studies) == 40 * 2 * 2 and studies["careless_removed"].eq(1).all()  # the careless one filtered
    covers = "win-rate interval covers the truth"
    nominal, narrow = summary.loc[(covers, 0.95, "all", "all")], summary.loc[(covers, 0.5, "all", "all")]
    assert nominal["coverage"] >= 0.85, nominal  # 95% intervals (16 prompts: a few points under at most)
    assert 0.3 <= narrow["coverage"] <= 0.7, narrow  # a 50% interval must be told apart from a 95% one
    assert nominal["coverage_low"] <= nominal["coverage"] <= nominal["coverage_high"]
    assert nominal["covered"] == studies["covered95"].sum()
    order = summary.xs("Bradley–Terry order is the true order", level="what")
    assert (order["coverage"] >= 0.75).all()  # 0.6 vs 0.85: the weaker baseline is usually placed last
    capsys.readouterr()
    assert command("--studies", 42, *args) == 0  # resumes: only the two new studies run
    again = capsys.readouterr().out
    assert again.count("study ") == 2 and "study 42/42" in again
    changed = ["--studies", 42, *args[:-4], "--spread", 2.0, "--work", work]
    assert cli_exit_code(coverage.main, [str(a) for a in changed]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "another design" in error
