"""Synthetic training data: prompt and image files in, shards out; resumption, settings guard, batch reading."""

import json

import pytest
import torch

from ladd.data import LatentBuckets, read_plan, read_shard, shard_paths
from ladd.shapes.prompts import main as prompts_main
from ladd.synth import main, shard_plan
from tests.conftest import cli_exit_code


def test_shard_plan_cuts_each_size_into_shards_of_one_bucket():
    sizes = [(64, 64), (96, 64)] * 5 + [(64, 64)]
    plan = shard_plan(sizes, 4)
    assert [(s["width"], s["height"], len(s["rows"])) for s in plan] == [(64, 64, 4), (64, 64, 2), (96, 64, 4),
                                                                         (96, 64, 1)]
    assert sorted(r for s in plan for r in s["rows"]) == list(range(11))
    assert all(sizes[r] == (s["width"], s["height"]) for s in plan for r in s["rows"])


def test_shards_hold_latents_text_and_prompts_of_one_bucket(smoke_latents, smoke_prompts):
    shards = shard_paths(smoke_latents)
    assert len(shards) == 4
    prompts_in_file = set(smoke_prompts.read_text().splitlines()[1:])
    shapes = set()
    for path in shards:
        tensors, prompts = read_shard(path)
        assert len(prompts) == len(tensors["latents"]) == len(tensors["prompt_embeds"]) == 8
        assert tensors["pooled_prompt_embeds"].shape[0] == 8
        assert all(any(line.startswith(p + ",") for line in prompts_in_file) for p in prompts)
        shapes.add(tuple(tensors["latents"].shape[2:]))
    assert shapes == {(16, 16), (16, 24), (24, 16)}  # all three aspect buckets, from the file's width/height
    assert read_plan(smoke_latents)["source"] == "teacher"


def test_rerun_only_makes_missing_shards_and_refuses_other_settings(smoke_teacher, smoke_prompts, tmp_path, capsys):
    args = ["--model", str(smoke_teacher), "--prompts", str(smoke_prompts), "--out", str(tmp_path), "--num", "16",
            "--shard-size", "8", "--batch-size", "8", "--steps", "2"]
    assert main(args) == 0
    first, second = shard_paths(tmp_path)[:2]
    kept = first.stat().st_mtime_ns
    before = read_shard(second)[0]["latents"]
    second.unlink()
    assert main(args) == 0
    assert first.stat().st_mtime_ns == kept  # finished shard untouched
    assert torch.equal(read_shard(second)[0]["latents"], before)  # regenerated identically (seeded per latent)
    capsys.readouterr()
    assert cli_exit_code(main, [*args[:-1], "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings (steps)" in err and len(err.splitlines()) == 1


def test_a_short_prompt_file_is_cycled_and_a_text_file_takes_the_models_size(smoke_teacher, tmp_path):
    (tmp_path / "prompts.txt").write_text("a red circle\n\ntwo blue squares\n")
    assert main(["--model", str(smoke_teacher), "--prompts", str(tmp_path / "prompts.txt"), "--out",
                 str(tmp_path / "out"), "--num", "5", "--steps", "1"]) == 0
    tensors, prompts = read_shard(tmp_path / "out" / "shard-00000.safetensors")
    assert prompts == ["a red circle", "two blue squares"] * 2 + ["a red circle"]
    assert tensors["latents"].shape[2:] == (16, 16)  # the teacher's recorded 64x64
    assert main(["--model", str(smoke_teacher), "--prompts", str(tmp_path / "prompts.txt"), "--out",
                 str(tmp_path / "wide"), "--size", "96x64", "--steps", "1"]) == 0
    assert read_shard(tmp_path / "wide" / "shard-00000.safetensors")[0]["latents"].shape[2:] == (16, 24)


def test_real_data_encodes_rendered_images_with_a_seeded_posterior_sample(smoke_teacher, tmp_path):
    from ladd.conditioning import encode_images
    from ladd.pipelines import load_pipeline
    from ladd.synth import load_images

    assert prompts_main(["--num", "4", "--out", str(tmp_path / "real.csv"), "--render", str(tmp_path / "img")]) == 0

    def latents(posterior):
        out = tmp_path / posterior
        assert main(["--model", str(smoke_teacher), "--images", str(tmp_path / "real.csv"), "--out", str(out),
                     "--posterior", posterior, "--size", "64x64"]) == 0
        return read_shard(out / "shard-00000.safetensors")

    (mean, prompts), (sampled, _) = latents("mean"), latents("sample")
    assert len(prompts) == 4 and read_plan(tmp_path / "mean")["source"] == "images"
    vae = load_pipeline(smoke_teacher).vae
    pixels = load_images(sorted((tmp_path / "img").glob("*.png")), 64, 64)
    assert torch.allclose(mean["latents"], encode_images(vae, pixels), atol=1e-5)
    assert (sampled["latents"] - mean["latents"]).std() > 0.01  # a draw from the posterior, not its mean
    (tmp_path / "sample" / "shard-00000.safetensors").unlink()
    assert torch.equal(latents("sample")[0]["latents"], sampled["latents"])  # the draw is seeded


@pytest.mark.parametrize("case,message", [
    ("no-source", "one of the arguments --prompts --images is required"),
    ("batch-size", "must be positive"),
    ("model", "not a diffusers pipeline folder"),
    ("size", "--size must be WIDTHxHEIGHT"),
    ("empty", "is empty"),
    ("latin-1", "is not UTF-8 text"),
    ("no-image-column", "no 'image' column"),
])
def test_bad_input_is_one_line_and_exit_2(smoke_teacher, tmp_path, capsys, case, message):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "latin.csv").write_bytes("prompt\nun café rouge\n".encode("latin-1"))
    (tmp_path / "ok.csv").write_text("prompt\na red circle\n")
    base = ["--model", str(smoke_teacher), "--out", str(tmp_path / "out")]
    argv = {"no-source": base, "batch-size": [*base, "--prompts", str(tmp_path / "ok.csv"), "--batch-size", "0"],
            "model": ["--model", str(tmp_path), "--out", str(tmp_path / "out"), "--prompts", str(tmp_path / "ok.csv")],
            "size": [*base, "--prompts", str(tmp_path / "ok.csv"), "--size", "64"],
            "empty": [*base, "--prompts", str(tmp_path / "empty.csv")],
            "latin-1": [*base, "--prompts", str(tmp_path / "latin.csv")],
            "no-image-column": [*base, "--images", str(tmp_path / "ok.csv")]}[case]
    assert cli_exit_code(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out" / "shard-00000.safetensors").exists()


def test_batches_are_a_function_of_iteration_and_process(smoke_latents):
    data = LatentBuckets(smoke_latents)
    assert len(data) == 32
    a, b = data.batch(5, 6, seed=0), data.batch(5, 6, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = data.batch(5, 6, seed=0, process_index=1)
    assert not torch.equal(a["latents"], other["latents"])
    shapes = {tuple(data.batch(i, 2, seed=0)["latents"].shape[2:]) for i in range(40)}
    assert len(shapes) == 3  # every bucket is visited, each batch from one bucket
    with pytest.raises(FileNotFoundError):
        LatentBuckets(smoke_latents / "nothing")


def test_plan_records_what_training_reads(smoke_latents, smoke_teacher):
    plan = json.loads((smoke_latents / "plan.json").read_text())
    assert plan["model"] == str(smoke_teacher) and plan["max_sequence_length"] >= 0 and plan["steps"] == 2
