"""scripts/ladd_results.py on the smoke zoo: the training-cost rows for the paper's recipe and a guided L_distill, and the
speed table with its breakdown by stage."""

import time

import pytest
from diffusers import SD3Transformer2DModel

from ladd.checkpoint import export_student
from ladd.paths import CONFIGS_DIR
from ladd.pipelines import load_pipeline, swap_vae
from ladd.sampling import read_sampling_defaults
from ladd.timesteps import StudentTimesteps
from tests.scripts import load_script

ladd_results = load_script("ladd_results")


def ratio(lines: list[str]) -> float:
    row = next(line for line in lines if line.startswith("| **ratio**"))
    return float(row.split("**")[3].rstrip("x"))


def test_training_cost_times_the_recipe_it_is_given(smoke_teacher, smoke_latents):
    config = CONFIGS_DIR / "ladd-smoke.toml"
    plain = ladd_results.training_cost(config, smoke_teacher, smoke_latents, batch_size=2, repeats=1)
    guided = ladd_results.training_cost(config, smoke_teacher, smoke_latents, batch_size=2, repeats=1,
                                        overrides=["distill.weight=0.2", "distill.guidance_scale=4.0"])
    assert ratio(plain) > 0 and ratio(guided) > 0
    assert not any("L_distill" in line for line in plain)
    assert any("L_distill with the teacher's unconditional forward" in line for line in guided)


def test_training_cost_trains_the_given_student_at_its_own_depth(smoke_teacher, smoke_latents, tmp_path):
    config = dict(SD3Transformer2DModel.load_config(smoke_teacher / "transformer"), num_layers=2)
    student = export_student(smoke_teacher, SD3Transformer2DModel.from_config(config), tmp_path / "deeper",
                             StudentTimesteps())[0]
    lines = ladd_results.training_cost(CONFIGS_DIR / "ladd-smoke.toml", smoke_teacher, smoke_latents, batch_size=2,
                                       repeats=1, student=student)
    assert lines[0].startswith("Batch 2, student 2 blocks, ") and ", teacher 1 blocks, " in lines[0]
    assert ratio(lines) > 0


def test_speed_times_both_pipelines_in_wall_clock_and_cpu_time(smoke_teacher, tmp_path):
    student = export_student(smoke_teacher, SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer"),
                             tmp_path / "student", StudentTimesteps(), link_teacher=True)[0]
    lines = ladd_results.speed(smoke_teacher, student, batch_size=2, repeats=1)
    header = next(line for line in lines if line.startswith("| what is timed"))
    assert "student (4 steps, guidance 0.0)" in header and header.endswith("| speed-up in CPU time |")
    rows = [line for line in lines if line.startswith("| full pipeline") or line.startswith("| text encoding")]
    assert len(rows) == 2
    for row in rows:
        teacher, student_seconds, wall, cpu = (cell.strip(" *x") for cell in row.split("|")[2:6])
        assert float(teacher) > 0 and float(student_seconds) > 0
        assert abs(float(wall) - float(teacher) / float(student_seconds)) <= 0.05 * float(wall) + 0.1
        assert float(cpu) > 0
    breakdown = lines[lines.index("| stage | teacher | student |"):]
    cells = {row.split("|")[1].strip(): [float(c) for c in row.split("|")[2:4]] for row in breakdown[2:]}
    assert list(cells) == [*ladd_results.STAGES, "the rest of the call", "whole call"]
    parts = [cells[stage] for stage in [*ladd_results.STAGES, "the rest of the call"]]
    for who in (0, 1):  # teacher, student: the stages and the rest add up to the whole call
        assert sum(part[who] for part in parts) == pytest.approx(cells["whole call"][who], abs=0.02)
        assert all(cells[stage][who] > 0 for stage in ladd_results.STAGES)


def test_stage_timer_times_each_stage_within_the_call_and_restores_the_pipeline(smoke_teacher):
    pipe = load_pipeline(smoke_teacher)
    swap_vae(pipe, smoke_teacher / "vae")  # the decode becomes an instance attribute (sliced), as in the speed rows
    pipe.set_progress_bar_config(disable=True)
    sliced_decode = pipe.vae.decode
    defaults = read_sampling_defaults(smoke_teacher)
    size = {"height": defaults["height"], "width": defaults["width"]}
    with ladd_results.stage_timer(pipe) as spent:
        started = time.perf_counter()
        pipe(["a red circle", "two blue squares"], num_inference_steps=3, guidance_scale=2.0, **size)
        wall = time.perf_counter() - started
    assert set(spent) == set(ladd_results.STAGES) and all(seconds > 0 for seconds in spent.values())
    assert sum(spent.values()) <= wall
    assert pipe.vae.decode is sliced_decode
    assert "forward" not in vars(pipe.transformer) and "encode_prompt" not in vars(pipe)
    pipe(["a red circle"], num_inference_steps=1, **size)
    assert sum(spent.values()) <= wall  # restored: later calls are not counted


def test_sections_runs_only_the_sections_asked_for(smoke_teacher, tmp_path, capsys):
    student = export_student(smoke_teacher, SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer"),
                             tmp_path / "student", StudentTimesteps(), link_teacher=True)[0]
    ladd_results.main(["--teacher", str(smoke_teacher), "--student", str(student), "--sections", "speed",
                       "--speed-batch-sizes", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "## Sampling speed" in out and "Batch of 2 held-out prompts" in out
    assert "## Quality" not in out and "## Training cost" not in out
    with pytest.raises(SystemExit, match="--sections takes quality,speed,cost, not speed,colour"):
        ladd_results.main(["--sections", "speed,colour"])
