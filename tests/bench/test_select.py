"""bench.select on student folders (earlier exports, soups): the rule and the export, on the smoke zoo."""

import json
import subprocess
import sys

import pytest
import torch
from diffusers import SD3Transformer2DModel

from bench.errors import BenchError
from bench.select import main as select_main
from ladd.checkpoint import export_student
from ladd.timesteps import StudentTimesteps


def perturbed_student(teacher, out, seed):
    student = SD3Transformer2DModel.from_pretrained(teacher / "transformer")
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return export_student(teacher, student, out, StudentTimesteps(), link_teacher=True)[0]


def test_select_among_folders_exports_the_best_mean(smoke_teacher, tmp_path, capsys):
    folders = [perturbed_student(smoke_teacher, tmp_path / name, seed) for seed, name in enumerate(["a", "b"])]
    export = tmp_path / "chosen"
    assert select_main(["--candidates", *map(str, folders), "--teacher", str(smoke_teacher), "--limit", "4",
                        "--out", str(tmp_path / "select"), "--export", str(export)]) == 0
    printed = capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| "): float(line.split(" | ")[4])
            for line in printed.splitlines() if line.startswith(f"| {tmp_path}")}
    assert len(rows) == 2 and "the first 4 validation prompts" in printed
    best = max(rows, key=rows.get)  # ties go to the first, as in the rule
    assert f"chosen: {best}" in printed
    chosen = SD3Transformer2DModel.from_pretrained(export / "transformer").state_dict()
    expected = SD3Transformer2DModel.from_pretrained(f"{best}/transformer").state_dict()
    assert all(torch.equal(chosen[name], expected[name]) for name in expected)
    sigmas = json.loads((export / "sampling_defaults.json").read_text())["consistency_sigmas"]
    assert sigmas["1"] == [1.0] and sigmas["2"] == [1.0, 0.5]  # the chosen student samples as the paper's in diffusers
    assert (tmp_path / "select" / "a-1-step" / "scores.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--candidates", "{tmp}"], "has no transformer/ folder"),
    ([], "nothing to choose from"),
    (["--run", "{tmp}"], "no checkpoints"),
])
def test_select_refuses_what_it_cannot_choose_from(args, message, tmp_path):
    with pytest.raises(BenchError, match=message):
        select_main([a.format(tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "select")])


@pytest.mark.parametrize("args, message", [
    (["--from", "soon"], "argument --from"),
    ([], "nothing to choose from"),
])
def test_a_user_error_is_one_line_and_exit_code_2(args, message):
    done = subprocess.run([sys.executable, "-m", "bench.select", *args], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith(f"python -m bench.select: error: {message}") and done.stderr.count("\n") == 1
