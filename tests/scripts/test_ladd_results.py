"""scripts/ladd_results.py on the smoke zoo: the training-cost rows for the paper's recipe and a guided L_distill, and the
speed table."""

import pytest
from diffusers import SD3Transformer2DModel

from ladd.checkpoint import export_student
from ladd.paths import CONFIGS_DIR
from ladd_results import main as ladd_results_main
from ladd_results import speed, training_cost


def ratio(lines: list[str]) -> float:
    row = next(line for line in lines if line.startswith("| **ratio**"))
    return float(row.split("**")[3].rstrip("x"))


def test_training_cost_times_the_recipe_it_is_given(smoke_teacher, smoke_latents):
    config = CONFIGS_DIR / "ladd-smoke.toml"
    plain = training_cost(config, smoke_teacher, smoke_latents, batch_size=2, repeats=1)
    guided = training_cost(config, smoke_teacher, smoke_latents, batch_size=2, repeats=1,
                           overrides=["distill.weight=0.2", "distill.guidance_scale=4.0"])
    assert ratio(plain) > 0 and ratio(guided) > 0
    assert not any("L_distill" in line for line in plain)
    assert any("L_distill with the teacher's unconditional forward" in line for line in guided)


def test_training_cost_trains_the_given_student_at_its_own_depth(smoke_teacher, smoke_latents, tmp_path):
    config = dict(SD3Transformer2DModel.load_config(smoke_teacher / "transformer"), num_layers=2)
    student = export_student(smoke_teacher, SD3Transformer2DModel.from_config(config), tmp_path / "deeper")[0]
    lines = training_cost(CONFIGS_DIR / "ladd-smoke.toml", smoke_teacher, smoke_latents, batch_size=2, repeats=1,
                          student=student)
    assert lines[0].startswith("Batch 2, student 2 blocks, ") and ", teacher 1 blocks, " in lines[0]
    assert ratio(lines) > 0


def test_speed_times_both_pipelines_in_wall_clock_and_cpu_time(smoke_teacher, tmp_path):
    student = export_student(smoke_teacher, SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer"),
                             tmp_path / "student", link_teacher=True)[0]
    lines = speed(smoke_teacher, student, batch_size=2, repeats=1)
    header = next(line for line in lines if line.startswith("| what is timed"))
    assert "student (4 steps, guidance 0.0)" in header and header.endswith("| speed-up in CPU time |")
    rows = [line for line in lines if line.startswith("| full pipeline") or line.startswith("| text encoding")]
    assert len(rows) == 2
    for row in rows:
        teacher, student_seconds, wall, cpu = (cell.strip(" *x") for cell in row.split("|")[2:6])
        assert float(teacher) > 0 and float(student_seconds) > 0
        assert abs(float(wall) - float(teacher) / float(student_seconds)) <= 0.05 * float(wall) + 0.1
        assert float(cpu) > 0


def test_sections_runs_only_the_sections_asked_for(smoke_teacher, tmp_path, capsys):
    student = export_student(smoke_teacher, SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer"),
                             tmp_path / "student", link_teacher=True)[0]
    ladd_results_main(["--teacher", str(smoke_teacher), "--student", str(student), "--sections", "speed",
                       "--speed-batch-sizes", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "## Sampling speed" in out and "Batch of 2 held-out prompts" in out
    assert "## Quality" not in out and "## Training cost" not in out
    with pytest.raises(SystemExit, match="--sections takes quality,speed,cost, not speed,colour"):
        ladd_results_main(["--sections", "speed,colour"])
