"""The documented demo chain (docs/human-eval.md) without a browser: runs -> study -> simulated votes -> report."""

from annotate import simulate, study
from bench import demo
from bench.report.__main__ import main as report


def test_demo_chain(tmp_path, capsys, cli):
    results = tmp_path / "results"
    assert demo.main(["--out", str(results), "--prompts", "8", "--samples-per-prompt", "2"]) == 0
    db = str(results / "study.db")
    assert study.main(["create", "--runs", str(results / "turbo1"), str(results / "teacher50"),
                       "--suite", "parti128", "--samples-per-prompt", "2", "--views", "4", "--batch-size", "8",
                       "--db", db]) == 0
    assert simulate.main(["--db", db, "--annotators", "6", "--prefer-first", "0.7", "--careless", "1"]) == 0
    assert "recorded" in capsys.readouterr().out
    code, _, err = cli(simulate, "--db", db, "--prefer-first", "1.5")
    assert code == 2 and err == f"{simulate.PROG}: error: --prefer-first must be strictly between 0 and 1\n"
    out = results / "report"
    assert report(["--study", db, "--runs", *map(str, results.iterdir()), "--out", str(out),
                        "--bootstrap", "100", "--bt-bootstrap", "20"]) == 0
    summary = (out / "summary.md").read_text()
    assert "shapes-turbo-1step" in summary and "shapes-sd3-50step" in summary
    assert (out / "index.html").is_file() and (out / "figures" / "win_rates.png").is_file()
