"""Each findings command (`python -m ladd.shapes.findings.<finding> --smoke`) end to end on tiny models, in one
shared work folder as in real use: the zoo's build of a teacher of another depth, training data, LADD runs,
benchmark runs, the evaluator-grounded study through the real database, and the tables; then resuming."""

import json

import pandas as pd
import pytest
import torch

from bench.runfolder import read_json
from ladd.preferences import read_preferences
from ladd.shapes.findings import data, dpo, renoise, scaling, steps
from tests.conftest import cli_exit_code

pytestmark = pytest.mark.slow  # ~60 s on 2 shared cores: five findings' worth of tiny runs


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from a second thread on a shared CPU
    folder = tmp_path_factory.mktemp("findings")
    yield folder
    torch.set_num_threads(previous)


def run(module, work, *extra):
    return module.main(["--smoke", "--work", str(work), "--out", str(work / "tables"), *map(str, extra)])


def test_scaling_end_to_end(work, capsys):
    assert run(scaling, work) == 0
    table = pd.read_csv(work / "tables" / "scaling.csv")
    # the centre (two seeds) and one arm per dimension at the other smoke depth, each at 1 and 4 steps; the teachers
    assert set(table["run"]) >= {"teacher-d1", "teacher-d2"} and table["run"].nunique() == 5 * 2 + 2
    assert set(table["metric"]) == {"accuracy", "clip_score", "check_score", "fd_clip"}
    assert (table["ci_low"] <= table["estimate"] + 1e-12).all()
    assert (table["estimate"] <= table["ci_high"] + 1e-12).all()
    row = table[(table["run"] == "s1-t1-g1-m1-distill0-seed0-4step") & (table["metric"] == "fd_clip")].iloc[0]
    scores = read_json(work / "bench" / row["run"] / "scores.json")["shapes"]
    assert row["estimate"] == pytest.approx(scores["fd_clip"], rel=1e-5)  # bench.score's own Fréchet distance
    assert set(table.loc[table["run"].str.startswith("s2-"), "student_depth"]) == {2}
    tags = read_json(work / "bench" / "s1-t2-g1-m1-distill0-seed0-1step" / "config.json")["tags"]
    assert tags["teacher_depth"] == 2 and tags["student_depth"] == 1 and tags["generator_depth"] == 1
    contrasts = pd.read_csv(work / "tables" / "scaling-contrasts.csv")
    assert {"student depth 2 − 1, at 4 steps", "student effect − teacher effect (2 − 1), at 1 step"} <= set(
        contrasts["contrast"])
    assert set(contrasts["verdict"]) <= {"reproduced", "consistent", "not reproduced", "reversed"}
    study = pd.read_csv(work / "tables" / "scaling-study.csv")
    assert set(study["baseline"]) == {"s2-t1-g1-m1-distill0-seed0-4step"} and (study["comparisons"] > 0).all()
    assert study["truth"].between(0, 1).all()
    # resuming: every stage is marked done; only the tables run again
    capsys.readouterr()
    assert run(scaling, work) == 0
    assert "scaling: 1 stage(s) run" in capsys.readouterr().out
    (work / "done" / "bench-s2-t1-g1-m1-distill0-seed0-4step.json").unlink()  # as if killed before its marker
    assert run(scaling, work, "--stage", "table") == 0  # the tables of what is benchmarked so far
    assert "not yet: s2-t1-g1-m1-distill0-seed0-4step" in capsys.readouterr().out
    partial = set(pd.read_csv(work / "tables" / "scaling-contrasts.csv")["contrast"])
    assert "student depth 2 − 1, at 4 steps" not in partial and "student depth 2 − 1, at 1 step" in partial
    assert "s2-t1-g1-m1-distill0-seed0-4step" not in set(pd.read_csv(work / "tables" / "scaling.csv")["run"])
    assert run(scaling, work, "--stage", "bench") == 0
    out = capsys.readouterr().out
    assert "$ python -m bench.run --model" in out and "(0 new" in out and "1 stage(s) run" in out
    assert run(scaling, work, "--plan") == 0
    plan = capsys.readouterr().out
    assert plan.count("[done     ]") == plan.count("\n") - 1 and "[every run] table" in plan


def test_renoise_data_and_steps_share_the_centre(work, capsys):
    if not (work / "done" / "zoo.json").is_file():
        assert run(scaling, work, "--stage", "zoo") == 0
    centre = work / "done" / "train-s1-t1-g1-m1-distill0-seed0.json"
    before = centre.read_text() if centre.is_file() else None
    for module in (renoise, data, steps):
        assert run(module, work) == 0
    assert before is None or centre.read_text() == before  # trained once, whichever finding came first
    renoise_runs = set(pd.read_csv(work / "tables" / "renoise.csv")["logit_mean"])
    assert renoise_runs == {-1.0, 0.0, 1.0, 2.0}
    data_table = pd.read_csv(work / "tables" / "data.csv").drop_duplicates("run")
    assert set(zip(data_table["data"], data_table["distill_weight"])) == {("synthetic", 0.0), ("synthetic", 0.2),
                                                                         ("real", 0.0), ("real", 0.2)}
    real = json.loads((work / "done" / "real-encode.json").read_text())["argv"]
    assert "--images" in real
    study = pd.read_csv(work / "tables" / "steps-study.csv")
    assert set(study["baseline"]) == {"teacher-d1", "s1-t1-g1-m1-distill0-seed0-1step"}
    assert set(study["question"]) == {"alignment", "quality"} and (study["votes"] > 0).all()
    contrasts = pd.read_csv(work / "tables" / "steps-contrasts.csv")
    assert set(contrasts["contrast"]) == {"4 steps − 1 step"} and (contrasts["seed_spread"] >= 0).all()


def test_dpo_chain_from_study_votes_to_the_reapplied_lora(work):
    """Sec. 4.5 on smoke models: study votes -> pairs -> DPO teacher -> its data -> LADD from it -> LoRA reapplied."""
    assert run(dpo, work) == 0
    pairs = read_preferences(work / "dpo" / "study" / "pairs.parquet")
    assert len(pairs) > 0 and set(pairs["source"]) <= {"study:alignment", "study:quality"}
    dpo_teacher = work / "dpo" / "study" / "dpo-study" / "pipeline"
    assert (dpo_teacher / "model_index.json").is_file()
    config = read_json(work / "runs" / "s1-t1-g1-m1-distill0-seed0-dpo-study" / "config.json")
    # the DPO teacher is student initialisation, teacher and data generator
    assert config["teacher"] == config["student_from"] == str(dpo_teacher)
    assert config["data"] == str(work / "data" / "synth-g1-dpo-study")
    assert str(dpo_teacher) in json.loads((work / "done" / "synth-g1-dpo-study.json").read_text())["argv"]
    tags = read_json(work / "bench" / "s1-t1-g1-m1-distill0-seed0-dpo-study-lora-study-4step" / "config.json")["tags"]
    assert tags["dpo"] == "study" and float(tags["lora_scale"]) == 1.0
    assert tags["lora"] == str(work / "dpo" / "study" / "dpo-study" / "lora")
    contrasts = set(pd.read_csv(work / "tables" / "dpo-contrasts.csv")["contrast"])
    assert {"DPO teacher (study) − teacher", "LADD + LoRA (study) − LADD, at 4 steps",
            "DPO-LADD − LADD, at 1 step", "DPO-LADD + LoRA − LADD, at 1 step"} <= contrasts
    study = pd.read_csv(work / "tables" / "dpo-study.csv")
    assert set(study["model"]) == {"s1-t1-g1-m1-distill0-seed0-dpo-study-lora-study-1step"}
    assert set(study["baseline"]) == {"s1-t1-g1-m1-distill0-seed0-1step", "s1-t1-g1-m1-distill0-seed0-dpo-study-1step"}


def test_a_given_student_and_protocol_guard(work, tmp_path):
    student = work / "runs" / "s1-t1-g1-m1-distill0-seed0" / "pipeline"
    if not student.is_dir():
        assert run(steps, work) == 0
    out = tmp_path / "tables"
    assert steps.main(["--smoke", "--work", str(work), "--out", str(out), "--student", str(student)]) == 0
    study = pd.read_csv(out / "steps-study.csv")
    assert set(study["model"]) == {"student-s1-t1-g1-m1-distill0-seed0-4step"}
    assert set(study["baseline"]) == {"teacher-d1", "student-s1-t1-g1-m1-distill0-seed0-1step"}
    assert cli_exit_code(scaling.main, ["--smoke", "--work", str(work), "--iterations", "7"]) == 2
    assert cli_exit_code(scaling.main, ["--smoke", "--work", str(work), "--stage", "teacher-d3"]) == 2
    assert cli_exit_code(steps.main, ["--smoke", "--work", str(work), "--student", str(tmp_path)]) == 2
