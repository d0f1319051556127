"""`python -m bench.report --findings DIR`: a figure and tables per paper finding from small hand-made CSV tables,
and one clear line for a folder or table it cannot use."""

import pandas as pd
import pytest

from bench.report import findings
from bench.report.__main__ import main
from tests.conftest import cli_exit_code


def metric_rows(finding, run, steps, settings, accuracy):
    return [{"finding": finding, "run": run, "model": f"results/findings/runs/{run}/pipeline", "steps": steps,
             "metric": metric, "estimate": value, "ci_low": value - 0.05, "ci_high": value + 0.05, **settings}
            for metric, value in (("accuracy", accuracy), ("clip_score", 0.7), ("fd_clip", 1.0 - accuracy))]


def arm(student, teacher, generator, seed=0, **extra):
    return {"student_depth": student, "teacher_depth": teacher, "generator_depth": generator, "seed": seed,
            "data": "synthetic", "logit_mean": 1.0, "distill_weight": 0.0, **extra}


@pytest.fixture
def tables(tmp_path):
    folder = tmp_path / "findings"
    folder.mkdir()
    rows = []
    for steps in (1, 4):
        rows += metric_rows("scaling", f"c0-{steps}", steps, arm(4, 4, 4), 0.5)
        rows += metric_rows("scaling", f"c1-{steps}", steps, arm(4, 4, 4, seed=1), 0.52)
        for depth, accuracy in ((2, 0.3), (8, 0.7)):
            rows += metric_rows("scaling", f"s{depth}-{steps}", steps, arm(depth, 4, 4), accuracy)
            rows += metric_rows("scaling", f"t{depth}-{steps}", steps, arm(4, depth, 4), 0.5)
            rows += metric_rows("scaling", f"g{depth}-{steps}", steps, arm(4, 4, depth), 0.5)
    pd.DataFrame(rows).to_csv(folder / "scaling.csv", index=False)
    steps_rows = (metric_rows("steps", "student-1step", 1, {}, 0.4) + metric_rows("steps", "student-4step", 4, {}, 0.6)
                  + metric_rows("steps", "teacher-d4", "default", {}, 0.65))
    pd.DataFrame(steps_rows).to_csv(folder / "steps.csv", index=False)
    pd.DataFrame([{"finding": "steps", "contrast": "4 steps − 1 step", "metric": "accuracy", "estimate": 0.2,
                   "ci_low": 0.15, "ci_high": 0.25, "expected": 1, "seed_spread": 0.0, "verdict": "reproduced",
                   "claim": "four steps improve on one"}]).to_csv(folder / "steps-contrasts.csv", index=False)
    pd.DataFrame([{"model": "student-4step", "baseline": b, "question": q, "votes": 200, "win_rate": w,
                   "ci_low": w - 0.06, "ci_high": w + 0.06, "expected": w + 0.01, "truth_in_ci": True,
                   "paper_claim": "…", "verdict": v}
                  for b, w, v in (("teacher-d4", 0.45, "not reproduced"), ("student-1step", 0.8, "reproduced"))
                  for q in ("alignment", "quality")]).to_csv(folder / "steps-study.csv", index=False)
    pd.DataFrame([{"what": "win-rate interval covers the truth", "level": level, "question": q, "baseline": "all",
                   "studies": 200, "coverage": c, "coverage_low": c - 0.02, "coverage_high": c + 0.02}
                  for level, c in ((0.95, 0.943), (0.5, 0.52)) for q in ("alignment", "all")]
                 ).to_csv(folder / "coverage.csv", index=False)
    return folder


def test_scaling_points_vary_one_dimension_around_the_centre(tables):
    metrics = pd.read_csv(tables / "scaling.csv")
    points = findings.scaling_points(metrics)
    student = points[(points["dimension"] == "student_depth") & (points["metric"] == "accuracy")
                     & (points["steps"] == 4)]
    # the centre (first seed) joins each dimension at depth 4; the seed-1 repeat and other dimensions' arms do not
    assert dict(zip(student["depth"], student["estimate"])) == {2: 0.3, 4: 0.5, 8: 0.7}
    assert set(points.loc[points["dimension"] == "teacher_depth", "run"].str[0]) == {"c", "t"}


def test_panel_points_place_each_run(tables):
    metrics = pd.read_csv(tables / "steps.csv")
    points, order = findings.panel_points(metrics, findings.run_label)
    assert order == ["student-1step", "student-4step", "teacher-d4"]
    accuracy = points[points["metric"] == "accuracy"]
    assert list(zip(accuracy["series"], accuracy["position"], accuracy["estimate"])) == [
        ("1", 0, 0.4), ("4", 1, 0.6), ("default", 2, 0.65)]
    renoise = pd.DataFrame(metric_rows("renoise", "m2", 1, arm(4, 4, 4, logit_mean=2.0), 0.4)
                           + metric_rows("renoise", "m-1", 1, arm(4, 4, 4, logit_mean=-1.0), 0.3))
    points, order = findings.panel_points(renoise, lambda r: r["logit_mean"])
    assert order is None and list(points.loc[points["metric"] == "fd_clip", "position"]) == [-1.0, 2.0]


def test_dpo_labels_name_each_link_of_the_chain():
    rows = pd.DataFrame(metric_rows("dpo", "teacher-d4", "default", {}, 0.5)
                        + metric_rows("dpo", "teacher-d4-dpo-evaluator", "default", {}, 0.55)
                        + metric_rows("dpo", "c-1step", 1, arm(4, 4, 4, lora=""), 0.4)
                        + metric_rows("dpo", "c-lora-1step", 1, arm(4, 4, 4, lora="study"), 0.42)
                        + metric_rows("dpo", "d-lora-1step", 1, arm(4, 4, 4, dpo="evaluator", lora="evaluator"), 0.45))
    rows.loc[rows["run"].str.startswith("teacher"), "student_depth"] = None
    rows["lora"], rows["dpo"] = rows["lora"].replace("", None), rows["dpo"].fillna("")
    _, order = findings.panel_points(rows, findings.dpo_label)
    assert order == ["teacher", "DPO teacher\n(evaluator)", "LADD", "LADD + LoRA\n(study)",
                     "DPO-LADD + LoRA\n(evaluator)"]


def test_report_draws_each_finding(tables, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--findings", str(tables), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    for heading in ("Findings, Fig. 11: 1 against 4 steps", "Findings, Fig. 7: scaling",
                    "Findings: do the study's intervals cover the truth?"):
        assert f"## {heading}" in summary
    assert "Fig. 4" not in summary and "Fig. 5" not in summary  # no tables, no section
    figures = {p.name for p in (out / "figures").iterdir()}
    assert figures == {"findings-steps.png", "findings-steps-study.png", "findings-scaling.png",
                       "findings-coverage.png"}
    assert "| 4 steps − 1 step | accuracy | 0.2 | 0.15 | 0.25 | 0 | reproduced |" in summary
    assert "oracle truth" in summary and "| student-4step | student-1step | quality | 200 | 0.8 |" in summary


def test_unusable_findings_are_one_line(tables, tmp_path, capsys):
    assert cli_exit_code(main, ["--findings", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "findings folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_exit_code(main, ["--findings", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "no findings tables" in capsys.readouterr().err
    pd.DataFrame({"run": ["a"], "estimate": [1.0]}).to_csv(tables / "renoise.csv", index=False)
    assert cli_exit_code(main, ["--findings", str(tables), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "renoise.csv: not a findings metrics table" in error
    assert not (tmp_path / "r").exists()  # nothing written
