"""scripts/student_soup.py: the weighted parameter average, by hand and end to end on the smoke teacher."""

import json

import pytest
import torch
from diffusers import SD3Transformer2DModel

from ladd.checkpoint import export_student
from student_soup import main as soup_main
from student_soup import soup_state_dict


def test_soup_is_the_weighted_average_of_each_parameter():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([4.0])}
    soup = soup_state_dict([a, b], [0.25, 0.75])
    assert torch.equal(soup["w"], torch.tensor([2.5, 5.0])) and torch.equal(soup["b"], torch.tensor([3.0]))
    assert soup["w"].dtype == torch.float32


@pytest.mark.parametrize("weights, other, message", [
    ([0.5, 0.6], {"w": torch.zeros(2)}, "sum to 1"),
    ([0.5, 0.5], {"w": torch.zeros(3)}, "differ in architecture"),
    ([0.5, 0.5], {"v": torch.zeros(2)}, "differ in architecture"),
    ([1.0], {"w": torch.zeros(2)}, "2 students but 1 weights"),
])
def test_soup_refuses_bad_weights_and_other_architectures(weights, other, message):
    with pytest.raises(ValueError, match=message):
        soup_state_dict([{"w": torch.ones(2)}, other], weights)


def test_soup_of_two_students_is_a_pipeline_folder_with_the_averaged_transformer(smoke_teacher, tmp_path):
    folders = []
    for seed in (0, 1):
        student = SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer")
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        folders.append(export_student(smoke_teacher, student, tmp_path / f"student-{seed}", link_teacher=True)[0])
    out = tmp_path / "soup"
    soup_main(["--students", *map(str, folders), "--weights", "0.75", "0.25", "--teacher", str(smoke_teacher),
               "--out", str(out)])
    parents = [SD3Transformer2DModel.from_pretrained(f / "transformer").state_dict() for f in folders]
    soup = SD3Transformer2DModel.from_pretrained(out / "transformer").state_dict()
    for name, value in soup.items():
        torch.testing.assert_close(value, 0.75 * parents[0][name] + 0.25 * parents[1][name])
    assert json.loads((out / "sampling_defaults.json").read_text())["num_inference_steps"] == 4
    assert (out / "vae").is_symlink()


def test_soup_of_a_folder_without_a_transformer_is_a_one_line_error(smoke_teacher, tmp_path):
    with pytest.raises(SystemExit, match="has no transformer/ folder"):
        soup_main(["--students", str(tmp_path), str(tmp_path), "--weights", "0.5", "0.5",
                   "--teacher", str(smoke_teacher), "--out", str(tmp_path / "soup")])
    assert not (tmp_path / "soup").exists()
