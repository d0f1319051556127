"""The shapes world's image-to-image suites (shapes-edit, shapes-inpaint), their scores, the classical inpainting
baseline, and one-line refusals of tasks a model cannot run."""

import functools
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.generate import plan_images
from bench.metrics import ShapesEditAccuracy
from bench.suites import load_suite
from ladd.conditioning import expand_input_channels
from ladd.edit_pipeline import StableDiffusion3EditPipeline
from ladd.sampling import write_sampling_defaults
from ladd.shapes.edits import EDIT_KINDS, edit_from_seed
from ladd.shapes.zoo import random_pipeline
from tests.bench.test_run_cli import assert_one_line_error, cli


@pytest.fixture(scope="module")
def tiny_edit_dir(tmp_path_factory):
    pipe = random_pipeline()
    edit = StableDiffusion3EditPipeline(**{**pipe.components, "transformer": expand_input_channels(pipe.transformer, 4)})
    folder = tmp_path_factory.mktemp("models") / "tiny-edit"
    edit.save_pretrained(folder)
    write_sampling_defaults(folder, num_inference_steps=2, guidance_scale=2.0, image_guidance_scale=1.5,
                            max_sequence_length=0)
    return folder


def test_shapes_edit_is_balanced_and_its_sources_are_the_edits_renderings(tmp_path):
    frame = load_suite("shapes-edit", data_dir=tmp_path)
    assert len(frame) == 280 and frame["category"].value_counts().to_dict() == {k: 40 for k in EDIT_KINDS}
    for row in frame.iloc[[0, 45, 279]].itertuples():
        edit = edit_from_seed(row.edit_kind, row.edit_seed, row.width, row.height)
        assert edit.instruction == row.instruction and edit.target_prompt == row.prompt
        assert np.array_equal(np.asarray(Image.open(row.source_path)), np.asarray(edit.render()[0]))
    stamp = (tmp_path / "shapes-edit" / "0000.png").stat().st_mtime_ns
    load_suite("shapes-edit", data_dir=tmp_path, limit=3)
    assert (tmp_path / "shapes-edit" / "0000.png").stat().st_mtime_ns == stamp  # rendered once


def test_shapes_inpaint_fixes_one_mask_policy_per_row(tmp_path):
    frame = load_suite("shapes-inpaint", data_dir=tmp_path)
    assert len(frame) == 258 and set(frame["category"].value_counts()) == {43}
    plan = plan_images([frame], samples_per_prompt=1, seed=0, size=(64, 64), model="m", steps=1, guidance=0.0,
                       mask_policy="mixed")
    assert (plan["mask_policy"] == frame["mask_policy"]).all()  # the suite's policy, not --mask-policy's draw


def test_the_edit_score_passes_rendered_truth_and_fails_the_unedited_source():
    edits = [edit_from_seed(kind, 3, 64, 64) for kind in EDIT_KINDS]
    truth, unedited = ShapesEditAccuracy(), ShapesEditAccuracy()
    sources, targets = zip(*(e.render() for e in edits))
    truth.update(list(sources), list(targets), edits)
    unedited.update(list(sources), list(sources), edits)
    assert truth.compute().item() == 1.0 and unedited.edit_scores().sum().item() == 0
    assert unedited.preservation_scores().mean().item() == 1.0


def test_an_instruction_editor_reads_the_instructions(tiny_edit_dir, tmp_path, monkeypatch, capsys):
    seen = []
    call = StableDiffusion3EditPipeline.__call__

    @functools.wraps(call)  # keeps the signature bench.run reads the pipeline's task from
    def spy(self, *args, **kwargs):
        seen.extend(kwargs["prompt"])
        return call(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusion3EditPipeline, "__call__", spy)
    code, out, err = cli(monkeypatch, capsys, "--model", tiny_edit_dir, "--suite", "shapes-edit", "--limit", "3",
                         "--data-dir", tmp_path / "data", "--out", tmp_path / "run", "--image-guidance", "2.5")
    assert code == 0, err
    manifest = pd.read_parquet(tmp_path / "run" / "manifest.parquet")
    assert seen == list(manifest["instruction"]) and all(i.startswith("make the") for i in seen)
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())["shapes-edit"]
    assert {"accuracy", "edit_accuracy", "preservation", "clip_direction_similarity"} <= set(scores)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["tags"]["image_guidance"] == 2.5
    code, _, err = cli(monkeypatch, capsys, "--model", tiny_edit_dir, "--suite", "shapes-edit", "--limit", "1",
                       "--data-dir", tmp_path / "data", "--out", tmp_path / "bad", "--strength", "0.5")
    assert_one_line_error(code, err, "StableDiffusion3EditPipeline", "takes no --strength")


def test_sdedit_on_a_text_to_image_model_reads_the_target_caption(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "shapes-edit", "--limit", "2",
                       "--data-dir", tmp_path / "data", "--out", tmp_path / "run", "--strength", "0.5",
                       "--no-score")
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["tags"]["strength"] == 0.5 and config["identity"]["strength"] == 0.5


def test_the_classical_baseline_fills_masks_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "--model", "opencv-telea", "--suite", "shapes-inpaint", "--limit", "12",
                         "--data-dir", tmp_path / "data", "--out", tmp_path / "run")
    assert code == 0, err
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())["shapes-inpaint"]
    assert scores["psnr_outside"] == 100.0  # nothing outside the mask changes
    assert 0 <= scores["accuracy"] <= 1 and scores["clip_distance"] >= 0 and len(scores["per_category"]) == 6


@pytest.mark.parametrize("model,suite,message", [
    ("tiny", "shapes-inpaint", "it cannot inpaint"),
    ("opencv-ns", "shapes", "cannot make images from text alone"),
    ("opencv-ns", "shapes-edit", "it does not edit"),
])
def test_a_task_the_model_cannot_run_is_one_line(tiny_pipeline_dir, tmp_path, monkeypatch, capsys, model, suite,
                                                 message):
    code, _, err = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir if model == "tiny" else model, "--suite",
                       suite, "--limit", "2", "--data-dir", tmp_path / "data", "--out", tmp_path / "run")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run" / "manifest.parquet").exists()
