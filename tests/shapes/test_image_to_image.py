"""The image-to-image chain on the smoke zoo, through the same code as the real one: teachers by continued training,
their data files, synthetic (edit) and real (inpainting) shards with the condition, LADD, and the exported student."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ladd.cli import LaddError
from ladd.data import read_plan, read_shard, shard_paths
from ladd.edit_pipeline import StableDiffusion3EditPipeline
from ladd.inpaint_pipeline import StableDiffusion3ChannelInpaintPipeline
from ladd.paths import CONFIGS_DIR
from ladd.pipelines import load_pipeline
from ladd.shapes.image_to_image import EditData, edit_pool
from ladd.shapes.image_to_image import main as teacher_main
from ladd.shapes.prompts import main as prompts_main
from ladd.synth import main as synth_main
from ladd.train import main as train_main
from tests.conftest import cli_exit_code


@pytest.fixture(scope="module")
def i2i_teachers(smoke_teacher, tmp_path_factory):
    out, work = tmp_path_factory.mktemp("i2i"), tmp_path_factory.mktemp("i2i-work")
    for task in ("edit", "inpaint"):
        assert teacher_main([task, "--smoke", "--out", str(out), "--work", str(work),
                             f'base="{smoke_teacher}"']) == 0
    return out


def test_both_teachers_grow_the_text_to_image_teacher_and_load_as_their_pipelines(i2i_teachers, smoke_teacher):
    base = load_pipeline(smoke_teacher).transformer
    for name, cls, channels in (("shapes-sd3-edit", StableDiffusion3EditPipeline, 8),
                                ("shapes-sd3-inpaint", StableDiffusion3ChannelInpaintPipeline, 9)):
        pipe = load_pipeline(i2i_teachers / name)
        assert type(pipe) is cls and pipe.transformer.config.in_channels == channels
        assert pipe.transformer.config.out_channels == 4 and pipe.transformer.config.num_layers == base.config.num_layers
        folders = [p for p in (i2i_teachers / name).iterdir() if p.is_dir()]
        assert {p.name for p in folders if not p.is_symlink()} == {"transformer"}  # the rest is the base's
        assert all(p.resolve().parent == smoke_teacher.resolve() for p in folders if p.is_symlink())
    defaults = json.loads((i2i_teachers / "shapes-sd3-edit" / "sampling_defaults.json").read_text())
    assert defaults["image_guidance_scale"] == 1.5 and defaults["guidance_scale"] == 4.0


def test_the_edit_pool_is_balanced_and_avoids_the_held_out_edits():
    from ladd.shapes.heldout import heldout_edit_keys

    pool = edit_pool(42, seed=3)
    assert [len(b["prompts"]) for b in pool] == [21, 10, 10]
    held_out = heldout_edit_keys()
    assert held_out and all(b["source"].shape == b["target"].shape for b in pool)
    assert all(b["source"].shape[2:] == b["target"].shape[2:] for b in pool)


def test_edit_training_drops_text_image_and_both_as_instruct_pix2pix(smoke_teacher):
    pipe = load_pipeline(smoke_teacher)
    data = EditData(pipe, edit_pool(21, seed=4), {"dropout": 0.05})
    generator = torch.Generator().manual_seed(0)
    empty_pooled = data.table([""])[1][0]
    text_dropped = image_dropped = both = 0
    for _ in range(60):
        _, _, pooled, condition = data.batch(0, torch.arange(len(data.prompts[0])), generator)
        no_text = torch.tensor([torch.equal(p, empty_pooled) for p in pooled])
        no_image = condition.flatten(1).abs().sum(1) == 0
        text_dropped += int((no_text & ~no_image).sum())
        image_dropped += int((no_image & ~no_text).sum())
        both += int((no_text & no_image).sum())
    total = 60 * len(data.prompts[0])
    for count in (text_dropped, image_dropped, both):
        assert 0.02 < count / total < 0.09


def test_edit_data_from_the_teacher_and_a_ladd_student_stock_diffusers_samples(i2i_teachers, tmp_path):
    assert prompts_main(["--num", "12", "--edits", "--render", str(tmp_path / "sources"), "--out",
                         str(tmp_path / "edits.csv")]) == 0
    edits = pd.read_csv(tmp_path / "edits.csv")
    assert set(edits.columns) >= {"prompt", "image", "width", "height", "kind"}
    assert synth_main(["--model", str(i2i_teachers / "shapes-sd3-edit"), "--prompts", str(tmp_path / "edits.csv"),
                       "--out", str(tmp_path / "synth"), "--steps", "2", "--shard-size", "8"]) == 0
    tensors, _ = read_shard(shard_paths(tmp_path / "synth")[0])
    assert tensors["image_latents"].shape == tensors["latents"].shape  # the source latent, 4 channels
    assert read_plan(tmp_path / "synth")["image_guidance_scale"] == 1.5  # the edit teacher's fixed nested CFG
    run = tmp_path / "run"
    assert train_main([str(CONFIGS_DIR / "ladd-smoke.toml"), f'teacher="{i2i_teachers / "shapes-sd3-edit"}"',
                       f'data="{tmp_path / "synth"}"', f'out="{run}"', "iterations=2"]) == 0
    student = load_pipeline(run / "pipeline")
    assert type(student) is StableDiffusion3EditPipeline and student.transformer.config.in_channels == 8
    defaults = json.loads((run / "pipeline" / "sampling_defaults.json").read_text())
    assert defaults["guidance_scale"] == 0.0 and defaults["image_guidance_scale"] == 0.0
    calls = []
    student.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(len(k["hidden_states"])),
                                                  with_kwargs=True)
    student.set_progress_bar_config(disable=True)
    image = student("make the circle blue", image=Image.open(tmp_path / edits["image"][0]),
                    sigmas=defaults["consistency_sigmas"]["1"], guidance_scale=0.0, image_guidance_scale=0.0,
                    max_sequence_length=defaults["max_sequence_length"]).images[0]
    assert image.size == (64, 64) and calls == [1]  # one step, one branch


def test_inpainting_real_data_with_masks_and_a_student_with_l_distill(i2i_teachers, tmp_path):
    assert prompts_main(["--num", "9", "--render", str(tmp_path / "scenes"), "--masks", "--out",
                         str(tmp_path / "real.csv")]) == 0
    real = pd.read_csv(tmp_path / "real.csv")
    assert set(real["mask_policy"]) <= {"thin", "medium", "thick", "round", "rectangle", "outpaint"}
    assert synth_main(["--model", str(i2i_teachers / "shapes-sd3-inpaint"), "--images", str(tmp_path / "real.csv"),
                       "--out", str(tmp_path / "synth")]) == 0
    tensors, _ = read_shard(shard_paths(tmp_path / "synth")[0])
    assert tensors["image_latents"].shape[1] == 5  # [mask, masked-image latent]
    mask = tensors["image_latents"][:, 0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() > 0
    run = tmp_path / "run"
    assert train_main([str(CONFIGS_DIR / "ladd-smoke.toml"), f'teacher="{i2i_teachers / "shapes-sd3-inpaint"}"',
                       f'data="{tmp_path / "synth"}"', f'out="{run}"', "iterations=2", "distill.weight=1.0"]) == 0
    log = pd.read_csv(run / "metrics.csv")
    assert (log["distill"] > 0).all()
    assert type(load_pipeline(run / "pipeline")) is StableDiffusion3ChannelInpaintPipeline


def test_a_conditioned_teacher_needs_its_condition_columns(i2i_teachers, tmp_path, capsys):
    (tmp_path / "plain.csv").write_text("prompt\nmake the circle blue\n")
    assert cli_exit_code(synth_main, ["--model", str(i2i_teachers / "shapes-sd3-inpaint"), "--prompts",
                                      str(tmp_path / "plain.csv"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'image', 'mask' column" in err[0]
    with pytest.raises(LaddError, match="base"):
        teacher_main(["edit", "--smoke", f'base="{tmp_path / "nothing"}"'])


def test_a_task_model_continues_as_it_is_and_is_rewritten_in_place(i2i_teachers, tmp_path):
    base = i2i_teachers / "shapes-sd3-edit"
    tokenizer = base / "tokenizer"
    if tokenizer.is_symlink():  # as in the real zoo, where a re-saved tokenizer differs from the base's
        target = tokenizer.resolve()
        tokenizer.unlink()
        shutil.copytree(target, tokenizer)
    before = load_pipeline(base).transformer.state_dict()
    assert teacher_main(["edit", "--smoke", "--out", str(i2i_teachers), "--work", str(tmp_path),
                         f'base="{base}"', "seed=1"]) == 0
    after = load_pipeline(base).transformer
    assert after.config.in_channels == 8  # not grown again
    assert any(not torch.equal(before[k], v) for k, v in after.state_dict().items())
    assert not (i2i_teachers / "shapes-sd3-edit.partial").exists()
    for link in (p for p in base.iterdir() if p.is_symlink()):  # never into the folder it replaced (or itself)
        assert link.resolve().is_dir() and not link.resolve().is_relative_to(base.resolve()), link
    # the other task's model is not a base for this one: one line
    assert cli_exit_code(teacher_main, ["edit", "--smoke", "--out", str(tmp_path), "--work", str(tmp_path),
                                        f'base="{i2i_teachers / "shapes-sd3-inpaint"}"']) == 2
