"""Synthetic training data: shards, resumption, settings guard, real-data mode, and batch reading."""

import json

import pytest
import torch

from ladd.data import LatentBuckets
from ladd.synth import main, read_shard, shard_plan


def test_shard_plan_follows_bucket_shares():
    plan = shard_plan(4000, 100, [(64, 64), (96, 64), (64, 96)], (0.5, 0.25, 0.25))
    sizes = [(s["width"], s["height"]) for s in plan]
    assert len(plan) == 40 and sizes.count((64, 64)) == 20 and sizes.count((96, 64)) == 10
    assert sum(s["size"] for s in shard_plan(250, 100, [(64, 64)], (1,))) == 250


def test_shards_hold_latents_text_and_prompts(smoke_latents):
    shards = sorted(smoke_latents.glob("shard-*.safetensors"))
    assert len(shards) == 3
    shapes = set()
    for path in shards:
        tensors, prompts = read_shard(path)
        assert len(prompts) == len(tensors["latents"]) == len(tensors["prompt_embeds"]) == 8
        assert tensors["pooled_prompt_embeds"].shape[0] == 8
        shapes.add(tuple(tensors["latents"].shape[2:]))
    assert shapes == {(16, 16), (16, 24), (24, 16)}  # all three aspect buckets


def test_rerun_only_makes_missing_shards_and_refuses_other_settings(smoke_teacher, tmp_path, capsys):
    args = ["--model", str(smoke_teacher), "--out", str(tmp_path), "--num", "16", "--shard-size", "8",
            "--batch-size", "8", "--steps", "2"]
    assert main(args) == 0
    first, second = sorted(tmp_path.glob("shard-*.safetensors"))
    kept = first.stat().st_mtime_ns
    before = read_shard(second)[0]["latents"]
    second.unlink()
    assert main(args) == 0
    assert first.stat().st_mtime_ns == kept  # finished shard untouched
    assert torch.equal(read_shard(second)[0]["latents"], before)  # regenerated identically (seeded per sample)
    assert main([*args[:-1], "3"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_real_data_mode_encodes_renderings(smoke_teacher, tmp_path):
    args = ["--model", str(smoke_teacher), "--out", str(tmp_path), "--num", "8", "--shard-size", "8",
            "--source", "render"]
    assert main(args) == 0
    shard = tmp_path / "shard-00000.safetensors"
    tensors, prompts = read_shard(shard)
    assert tensors["latents"].shape == (8, 4, 16, 16) and len(prompts) == 8
    shard.unlink()
    assert main(args) == 0
    assert torch.equal(read_shard(shard)[0]["latents"], tensors["latents"])  # posterior samples are seeded


def test_real_data_mode_samples_the_posterior_like_the_teachers_training_data(smoke_teacher, tmp_path):
    from ladd.conditioning import encode_images
    from ladd.pipelines import load_pipeline
    from ladd.synth import render_images

    def latents(posterior):
        out = tmp_path / posterior
        assert main(["--model", str(smoke_teacher), "--out", str(out), "--num", "4", "--shard-size", "4",
                     "--source", "render", "--posterior", posterior]) == 0
        return read_shard(out / "shard-00000.safetensors")

    (mean, prompts), (sampled, _) = latents("mean"), latents("sample")
    vae = load_pipeline(smoke_teacher).vae
    pixels = render_images(prompts, list(range(4)), 64, 64)  # the default --seed 0 gives latent i the seed i
    assert torch.allclose(mean["latents"], encode_images(vae, pixels), atol=1e-5)
    spread = (sampled["latents"] - mean["latents"]).std()
    assert spread > 0.01  # a draw from the posterior, not its mean


def test_images_mode_reads_a_csv(smoke_teacher, tmp_path):
    from PIL import Image

    (tmp_path / "a.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (50, 40), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "data.csv").write_text(f"image,prompt\n{tmp_path / 'a.png'},a red square\n")
    args = ["--model", str(smoke_teacher), "--out", str(tmp_path / "out"), "--source", "images",
            "--images-csv", str(tmp_path / "data.csv"), "--num", "2", "--shard-size", "2"]
    assert main(args) == 0
    assert read_shard(tmp_path / "out" / "shard-00000.safetensors")[1] == ["a red square"] * 2


@pytest.mark.parametrize("extra,message", [(["--num", "0"], "--num"), (["--source", "images"], "--images-csv"),
                                           (["--num", "4", "--batch-size", "0"], "positive")])
def test_bad_arguments(smoke_teacher, tmp_path, capsys, extra, message):
    assert main(["--model", str(smoke_teacher), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--out", str(tmp_path), "--num", "1"]) == 2


def test_batches_are_a_function_of_iteration_and_process(smoke_latents):
    data = LatentBuckets(smoke_latents)
    assert len(data) == 24
    a, b = data.batch(5, 6, seed=0), data.batch(5, 6, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = data.batch(5, 6, seed=0, process_index=1)
    assert not torch.equal(a["latents"], other["latents"])
    shapes = {tuple(data.batch(i, 2, seed=0)["latents"].shape[2:]) for i in range(40)}
    assert len(shapes) == 3  # every bucket is visited, each batch from one bucket
    with pytest.raises(FileNotFoundError):
        LatentBuckets(smoke_latents / "nothing")


def test_teacher_data_holds_the_noise_each_latent_was_sampled_from(smoke_teacher, smoke_latents):
    """The teacher's sampler is deterministic: run again from the stored noise, it gives the stored latents."""
    from ladd.pipelines import load_pipeline

    plan = json.loads((smoke_latents / "plan.json").read_text())
    tensors, prompts = read_shard(sorted(smoke_latents.glob("shard-*.safetensors"))[1])
    assert tensors["noise"].shape == tensors["latents"].shape
    pipe = load_pipeline(smoke_teacher)
    pipe.set_progress_bar_config(disable=True)
    height, width = (8 * s for s in tensors["latents"].shape[2:])
    again = pipe(prompt=prompts[:3], height=height, width=width, num_inference_steps=plan["steps"],
                 guidance_scale=plan["guidance"], latents=tensors["noise"][:3],
                 max_sequence_length=plan["max_sequence_length"], output_type="latent").images
    torch.testing.assert_close(again, tensors["latents"][:3])
    assert not torch.allclose(tensors["noise"][0], tensors["noise"][1])


def test_add_noise_restores_the_noise_of_older_data_and_batches_carry_only_complete_tensors(
        smoke_latents, tmp_path, capsys):
    import shutil

    from ladd.synth import write_shard

    shutil.copytree(smoke_latents, tmp_path / "data")
    shards = sorted((tmp_path / "data").glob("shard-*.safetensors"))
    saved = read_shard(shards[0])[0]["noise"]
    for path in shards[:2]:  # as data made before the noise was saved
        tensors, prompts = read_shard(path)
        del tensors["noise"]
        write_shard(path, tensors, {"prompts": json.dumps(prompts)})
    assert "noise" not in LatentBuckets(tmp_path / "data").batch(0, 2, seed=0)  # never a misaligned tensor
    assert main(["--out", str(tmp_path / "data"), "--add-noise"]) == 0
    assert "noise added to 2 shards" in capsys.readouterr().out
    assert torch.equal(read_shard(shards[0])[0]["noise"], saved)
    assert "noise" in LatentBuckets(tmp_path / "data").batch(0, 2, seed=0)


def test_add_noise_refuses_real_data_and_a_folder_without_a_plan(smoke_teacher, tmp_path, capsys):
    assert main(["--model", str(smoke_teacher), "--out", str(tmp_path / "real"), "--num", "8", "--shard-size", "8",
                 "--source", "render"]) == 0
    assert "noise" not in read_shard(tmp_path / "real" / "shard-00000.safetensors")[0]
    assert main(["--out", str(tmp_path / "real"), "--add-noise"]) == 2
    assert "only teacher-made data" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "none"), "--add-noise"]) == 2
    assert "no plan.json" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "none"), "--num", "4"]) == 2
    assert "--model is required" in capsys.readouterr().err
