"""scripts/student_soup.py: the weighted parameter average, by hand and end to end on the smoke teacher."""

import json

import pytest
import torch
from diffusers import SD3Transformer2DModel

from ladd.checkpoint import CHECKPOINT_FILE, export_student
from student_soup import main as soup_main
from student_soup import greedy_soup, ingredient_name, soup_state_dict


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
    with pytest.raises(SystemExit, match="has no transformer/ folder and is not a LADD checkpoint"):
        soup_main(["--students", str(tmp_path), str(tmp_path), "--weights", "0.5", "0.5",
                   "--teacher", str(smoke_teacher), "--out", str(tmp_path / "soup")])
    assert not (tmp_path / "soup").exists()


def test_greedy_soup_ranks_then_keeps_only_ingredients_that_do_not_lower_the_score():
    # Ingredients are numbers and a soup's score is made up: "a" and "c" together help, "b" hurts any soup.
    own = {"a": 0.5, "b": 0.4, "c": 0.3, "d": 0.2}
    def score(soup):
        if len(soup) == 1:
            return own[soup[0]]
        return 0.6 - 0.3 * ("b" in soup) - 0.05 * ("d" in soup)
    steps = greedy_soup(["c", "d", "a", "b"], score)
    assert [(tried, kept) for tried, _, kept in steps] == [
        (("a",), True), (("a", "b"), False), (("a", "c"), True), (("a", "c", "d"), False)]
    assert [round(s, 2) for _, s, _ in steps] == [0.5, 0.3, 0.6, 0.55]


def test_greedy_soup_keeps_an_ingredient_that_ties():
    steps = greedy_soup(["x", "y"], lambda soup: 1.0)
    assert steps[-1] == (("x", "y"), 1.0, True)


def test_greedy_soup_end_to_end_writes_the_chosen_uniform_soup(smoke_teacher, tmp_path, capsys):
    folders = []
    for seed in (0, 1, 2):
        student = SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer")
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.1 * torch.randn_like(p))
        folders.append(export_student(smoke_teacher, student, tmp_path / f"student-{seed}", link_teacher=True)[0])
    out, scores = tmp_path / "greedy", tmp_path / "scores"
    soup_main(["--greedy", "--students", *map(str, folders), "--teacher", str(smoke_teacher), "--limit", "2",
               "--scores", str(scores), "--out", str(out)])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| student-")]
    assert len(rows) == 3 and rows[0].endswith("| yes |")  # the best ingredient first, then one row per try
    kept = rows[0].split(" | ")[0].lstrip("| ").split(" + ")
    for row in rows[1:]:
        if row.endswith("| yes |"):
            kept = row.split(" | ")[0].lstrip("| ").split(" + ")
    parents = {f.name: SD3Transformer2DModel.from_pretrained(f / "transformer").state_dict() for f in folders}
    soup = SD3Transformer2DModel.from_pretrained(out / "transformer").state_dict()
    for name, value in soup.items():
        torch.testing.assert_close(value, sum(parents[k][name] for k in kept) / len(kept))
    assert (scores / "student-0-1-step" / "scores.json").exists()


@pytest.mark.parametrize("args, message", [
    ([], "either --weights"),
    (["--greedy", "--weights", "0.5", "0.5"], "either --weights"),
])
def test_soup_needs_weights_or_greedy(args, message, smoke_teacher, tmp_path):
    folder = export_student(smoke_teacher, SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer"),
                            tmp_path / "s", link_teacher=True)[0]
    with pytest.raises(SystemExit, match=message):
        soup_main(["--students", str(folder), str(folder), *args, "--teacher", str(smoke_teacher),
                   "--out", str(tmp_path / "soup")])
    assert not (tmp_path / "soup").exists()


def test_checkpoints_of_two_runs_at_one_iteration_get_distinct_ingredient_names(tmp_path):
    names = []
    for run in ("fork-a", "fork-b"):
        checkpoint = tmp_path / run / "checkpoints" / "step-000500"
        checkpoint.mkdir(parents=True)
        (checkpoint / CHECKPOINT_FILE).write_text("{}")
        names.append(ingredient_name(checkpoint))
    assert names == ["fork-a-step-000500", "fork-b-step-000500"]
    assert ingredient_name(tmp_path / "students" / "guided") == "guided"
