"""python -m bench.report end to end on fake run folders and simulated votes, plus its error paths."""

import re

import pandas as pd
import pytest

from annotate import db
from annotate.simulate import simulate
from annotate.study import create_study
from bench.report import charts
from bench.report.__main__ import PROG, main
from bench.report.publish import build_report
from bench.report.runs import accuracy_by_category, editing_points, lora_pairs, lora_table, scaling_points
from bench.report.sections import Options
from bench.report.study import load_study
from bench.runfolder import fake_prompts, fake_scores, read_runs, write_fake_run
from ladd.cli import run_cli

FAST = ["--bootstrap", "200", "--bt-bootstrap", "40"]


@pytest.fixture
def results(tmp_path):
    """results/ with two runs and a study in which attentive annotators prefer the first run 90% of the time."""
    folder = tmp_path / "results"
    prompts = fake_prompts(12)
    runs = [write_fake_run(folder / "turbo1", "shapes-turbo", 1, prompts, 2, size=8, sharpness=0.5,
                           scores=fake_scores(prompts, "parti128", 0.27)),
            write_fake_run(folder / "teacher50", "shapes-sd3", 50, prompts, 2, size=8,
                           scores=fake_scores(prompts, "parti128", 0.30))]
    engine = db.make_engine(str(folder / "study.db"), must_exist=False)
    model, *baselines = read_runs(runs)
    create_study(engine, "demo", model, baselines, "parti128", 2, 4, batch_size=12, gold_per_batch=2)
    simulate(engine, db.get_study(engine), annotators=8, prefer_first=0.9, careless=2, prompt_spread=0.0, seed=1)
    engine.dispose()
    return folder


def win_rate_in(summary: str, question: str) -> int:
    return int(re.search(rf"\| {question} \| shapes-turbo-1step \| shapes-sd3-50step \|[^%]*?(\d+)% \[",
                         summary).group(1))


def test_study_and_runs(results, capsys):
    out = results / "report"
    paths = [str(p) for p in sorted(results.iterdir())]  # what `results/*` expands to, db file included
    assert main(["--study", str(results / "study.db"), "--runs", *paths, "--out", str(out), *FAST]) == 0
    assert "skipped" in capsys.readouterr().err  # the database file is not a run
    summary = (out / "summary.md").read_text()
    for heading in ("Quality filters", "Win rates", "Bradley–Terry ratings", "Win rate per Parti category",
                    "Win rate per Parti challenge", "Inter-annotator agreement", "Metrics per suite",
                    "CLIP score per category", "Sample pairs"):
        assert f"## {heading}" in summary, heading
    # the careless annotators are caught and the 90% preference shows through
    assert 75 <= win_rate_in(summary, "Prompt alignment") <= 100
    assert 75 <= win_rate_in(summary, "Image quality") <= 100
    filters = summary[summary.index("## Quality filters"):summary.index("## Win rates")]
    assert "too fast | median seconds per answer < 1 | " in filters
    page = (out / "index.html").read_text()
    for src in re.findall(r"src='([^']+)'", page):
        assert (out / src).is_file(), src
    assert "figures/win_rates.png" in page and page.count("pairs/pair") >= 2


def test_study_wording_names_the_suite_s_groups_and_each_count_s_question(results, tmp_path):
    out = results / "report"
    assert main(["--study", str(results / "study.db"), "--out", str(out), *FAST]) == 0
    summary = (out / "summary.md").read_text()
    votes = db.export_votes(db.make_engine(str(results / "study.db")), 1)["question"].value_counts()
    assert (f"{votes['alignment']} on prompt alignment and {votes['quality']} on image quality (each pair is "
            "asked both questions)") in summary
    page = (out / "index.html").read_text()
    assert "prompt alignment: " in page and "image quality: " in page  # sample pairs: votes per question

    # A study on another suite (here DrawBench-style categories): "category", not "Parti category".
    prompts = fake_prompts(12)
    runs = [write_fake_run(tmp_path / "other" / name, name, steps, prompts, 2, suite="drawbench", size=8)
            for name, steps in (("m", 1), ("b", 50))]
    engine = db.make_engine(str(tmp_path / "other.db"), must_exist=False)
    model, *baselines = read_runs(runs)
    create_study(engine, "other", model, baselines, "drawbench", 2, 4, batch_size=12, gold_per_batch=0)
    simulate(engine, db.get_study(engine), annotators=4, prefer_first=0.8, prompt_spread=0.0, seed=1)
    other = tmp_path / "other-report"
    assert main(["--study", str(tmp_path / "other.db"), "--out", str(other), *FAST]) == 0
    text = (other / "summary.md").read_text()
    assert "## Win rate per category" in text and "Parti" not in text


def test_runs_only_with_scaling_editing_and_inpainting(tmp_path):
    prompts = fake_prompts(4)
    runs = []
    for s, t, g, score in ((2, 8, 8, 0.60), (4, 8, 8, 0.70), (8, 8, 8, 0.80), (8, 4, 8, 0.78), (8, 2, 8, 0.75),
                           (8, 8, 4, 0.79), (8, 8, 2, 0.77)):
        runs.append(write_fake_run(tmp_path / f"s{s}t{t}g{g}", "shapes-turbo", 1, prompts, 1, suite="shapes",
                                   size=8, tags={"student_depth": s, "teacher_depth": t, "generator_depth": g},
                                   scores={"shapes": {"accuracy": score, "clip_score": score / 3}}))
    for w, (image_sim, direction_sim) in zip((1.0, 1.5, 2.0), ((0.9, 0.10), (0.85, 0.14), (0.8, 0.17))):
        runs.append(write_fake_run(tmp_path / f"edit{w}", "shapes-edit", 4, prompts, 1, suite="pie-bench",
                                   size=8, tags={"image_guidance": w},
                                   scores={"pie-bench": {"clip_image_similarity": image_sim,
                                                         "clip_direction_similarity": direction_sim}}))
    runs.append(write_fake_run(tmp_path / "inpaint", "shapes-inpaint", 4, prompts, 1, suite="coco-inpaint",
                               size=8, scores={"coco-inpaint": {"fid": 12.5, "lpips": 0.21,
                                                                "per_category": {"thick": {"fid": 15.0,
                                                                                           "lpips": 0.3}}}}))
    out = tmp_path / "report"
    assert main(["--runs", *map(str, runs), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert (out / "figures" / "scaling_shapes.png").is_file()
    assert (out / "figures" / "editing_pie-bench.png").is_file()
    assert "## Inpainting" in summary and "| shapes-inpaint-4step | coco-inpaint | thick | 15 | 0.3 |" in summary
    assert "## Human preference study" not in summary

    points, metrics = scaling_points(read_runs(runs[:7]), "shapes")
    assert metrics == ["accuracy", "clip_score"]
    student = points[points["dimension"] == "student_depth"].sort_values("depth")
    assert student["depth"].tolist() == [2, 4, 8] and student["accuracy"].tolist() == [0.60, 0.70, 0.80]
    assert sorted(points[points["dimension"] == "teacher_depth"]["depth"]) == [2, 4, 8]
    editing = editing_points(read_runs(runs[7:10]))
    assert editing.sort_values("value")["image_similarity"].tolist() == [0.9, 0.85, 0.8]
    assert set(editing["series"]) == {"shapes-edit (image guidance)"}


def test_figure_13_left_puts_each_sweep_and_the_students_steps_on_its_own_line(tmp_path):
    """Fig. 13 on the shapes world: the edit teacher over image guidance, SDEdit over strength, the student at 1 and
    4 steps; exact edit accuracy against preservation beside the CLIP panel."""
    prompts = fake_prompts(2)
    runs = []
    for name, steps, tags, edit in (("shapes-sd3-edit", 50, {"image_guidance": 1.5}, 0.6),
                                    ("shapes-sd3-edit", 50, {"image_guidance": 3.0}, 0.7),
                                    ("shapes-sd3", 50, {"strength": 0.5}, 0.3),
                                    ("shapes-sd3", 50, {"strength": 0.9}, 0.4),
                                    ("shapes-edit-turbo", 1, {}, 0.5), ("shapes-edit-turbo", 4, {}, 0.55)):
        runs.append(write_fake_run(tmp_path / f"{name}-{steps}-{tags}", name, steps, prompts, 1, suite="shapes-edit",
                                   size=8, tags=tags,
                                   scores={"shapes-edit": {"clip_image_similarity": 0.9 - edit / 2,
                                                           "clip_direction_similarity": edit / 3,
                                                           "edit_accuracy": edit, "preservation": 1 - edit / 4}}))
    points = editing_points(read_runs(runs))
    assert set(points["series"]) == {"shapes-sd3-edit (image guidance)", "shapes-sd3 (SDEdit strength)",
                                     "shapes-edit-turbo (steps)"}
    students = points[points["series"] == "shapes-edit-turbo (steps)"].sort_values("value")
    assert students["label"].tolist() == ["1 step", "4 step"] and students["edit_accuracy"].tolist() == [0.5, 0.55]
    assert main(["--runs", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "figures" / "editing_shapes-edit.png").is_file()


def test_study_only(results):
    out = results / "only-study"
    assert main(["--study", str(results / "study.db"), "--out", str(out), *FAST]) == 0
    summary = (out / "summary.md").read_text()
    assert "## Win rates" in summary and "## Runs" not in summary


@pytest.mark.parametrize("problem", ["missing_db", "unknown_run", "empty_study", "nothing", "not_a_study",
                                     "bad_run", "bad_number"])
def test_bad_input_keeps_the_existing_report(results, tmp_path, capsys, problem):
    out = results / "report"
    out.mkdir()
    (out / "index.html").write_text("previous report")
    args = {"missing_db": ["--study", str(tmp_path / "nope.db")],
            "unknown_run": ["--study", str(results / "study.db"), "--runs", str(results / "turbo1"),
                            str(results / "no-such-run")],
            "empty_study": ["--study", str(tmp_path / "empty.db")],
            "nothing": [],
            "not_a_study": ["--study", str(tmp_path / "other.db")],
            "bad_run": ["--runs", str(results / "turbo1")],
            "bad_number": ["--runs", str(results / "turbo1"), "--pairs", "six"]}[problem]
    if problem == "empty_study":
        engine = db.make_engine(str(tmp_path / "empty.db"), must_exist=False)
        model, *baselines = read_runs([results / "turbo1", results / "teacher50"])
        create_study(engine, "empty", model, baselines, "parti128", 2, 1, 10, 0)
    if problem == "not_a_study":
        pd.DataFrame({"x": [1]}).to_sql("other", db.make_engine(str(tmp_path / "other.db"), must_exist=False))
    if problem == "bad_run":
        (results / "turbo1" / "config.json").write_text("{broken")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, PROG, [*args, "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"{PROG}: error: ") and err.count("\n") == 1, err
    assert (out / "index.html").read_text() == "previous report"
    assert not (tmp_path / "nope.db").exists()


def test_failure_while_rendering_leaves_the_old_report(results, monkeypatch):
    out = results / "report"
    out.mkdir()
    (out / "index.html").write_text("previous report")

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(charts, "win_rate_bars", broken)
    with pytest.raises(RuntimeError):
        build_report(load_study(str(results / "study.db"), None), [], out, Options(bootstrap=200, bt_bootstrap=40))
    assert (out / "index.html").read_text() == "previous report"
    assert not [p for p in results.iterdir() if p.name.startswith(".report-")]  # no staging left behind


def test_figure_8_pairs_each_run_with_a_lora_with_the_same_run_without_it(tmp_path):
    """The paper's reapplication of the DPO-LoRA: teacher and student, each without and with the LoRA; a run with a
    LoRA whose plain twin is missing (other steps) is not paired."""
    prompts = fake_prompts(3)
    lora = str(tmp_path / "dpo-evaluator" / "lora")
    runs = []
    for name, steps, tags, accuracy in (("shapes-sd3", 50, {}, 0.50), ("shapes-sd3", 50, {"lora": lora}, 0.56),
                                        ("shapes-turbo", 1, {}, 0.45),
                                        ("shapes-turbo", 1, {"lora": lora, "lora_scale": 0.5}, 0.47),
                                        ("shapes-turbo", 4, {"lora": lora}, 0.52)):
        per_category = {"counting": {"accuracy": accuracy - 0.1, "clip_score": 0.7}, "single": {"accuracy": accuracy}}
        runs.append(write_fake_run(tmp_path / f"{name}-{steps}-{len(tags)}", name, steps, prompts, 1, suite="shapes",
                                   size=8, tags=tags, scores={"shapes": {"accuracy": accuracy, "n_images": 3,
                                                                         "per_category": per_category}}))
    read = read_runs(runs)
    by_category = accuracy_by_category(read)["shapes"]  # the exact accuracy per category, beside the CLIP score's
    assert by_category["category"].tolist() == ["counting", "single"]
    assert by_category[read[1].name].round(4).tolist() == [0.46, 0.56]
    pairs = lora_pairs(read)
    assert [(a.name, b.name) for a, b in pairs] == [(read[0].name, read[1].name), (read[2].name, read[3].name)]
    table = lora_table(pairs)
    assert table["metric"].tolist() == ["accuracy", "accuracy"]  # counts are not compared
    assert table["change"].round(4).tolist() == [0.06, 0.02] and table["lora"].tolist() == ["dpo-evaluator"] * 2
    assert table["lora_scale"].tolist() == [1.0, 0.5]
    out = tmp_path / "report"
    assert main(["--runs", *map(str, runs), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "## LoRA reapplied" in summary and "## Exact accuracy per category" in summary
    assert (out / "figures" / "lora.png").is_file()
    html = (out / "index.html").read_text()
    assert html.count("without LoRA") >= 2 * 3 and "with dpo-evaluator" in html
    assert len(list((out / "pairs").glob("lora*"))) == 2 * 2 * 3
