"""Generation: fixed seeds, batches cut from the plan, sharding and resuming reproduce an uninterrupted run,
and the editing / inpainting plumbing."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.generate import (generate, make_batches, plan_images, recovered_rows, resolve_call_kwargs,
                            run_batch, shard_batches)
from bench.masks import make_mask
from bench.runfolder import Journal, merge_manifest
from bench.suites import load_suite


def shapes_frame(n=6):
    return pd.DataFrame({"suite": "shapes", "prompt_id": [f"{i:04d}" for i in range(n)],
                         "prompt": ["a red circle", "two blue squares", "a green cross"] * (n // 3),
                         "category": "single", "challenge": "", "width": [32, 32, 48] * (n // 3),
                         "height": 32})


def plan(frames, model="m", samples=2, seed=0, size=(32, 32)):
    return plan_images(frames, samples_per_prompt=samples, seed=seed, size=size, model=model, steps=4,
                       guidance=0.0)


def test_seeds_are_fixed_per_prompt_and_sample_and_shared_by_models():
    frame = load_suite("drawbench", limit=5)
    a, b = plan([frame], model="sd3-turbo"), plan([frame], model="shapes-turbo")
    assert a["seed"].tolist() == b["seed"].tolist()
    assert a["seed"].is_unique
    limited = plan([load_suite("drawbench", limit=2)])
    assert limited["seed"].tolist() == a["seed"].tolist()[:4]  # --limit does not move seeds
    assert plan([frame], seed=1)["seed"].tolist() != a["seed"].tolist()
    assert a["path"].tolist()[:2] == ["images/drawbench/0000_0.png", "images/drawbench/0000_1.png"]


def test_per_row_sizes_and_batches_by_size():
    p = plan([shapes_frame()], samples=1)
    assert p[["width", "height"]].values.tolist()[:3] == [[32, 32], [32, 32], [48, 32]]
    batches = make_batches(p, batch_size=3)
    assert [len(b) for b in batches] == [3, 1, 2]
    assert all(b[["width", "height"]].drop_duplicates().shape[0] == 1 for b in batches)
    shards = [shard_batches(batches, r, 2) for r in range(2)]
    ids = sorted(i for shard in shards for b in shard for i in b.index)
    assert ids == list(p.index)  # every image in exactly one shard


def test_each_image_gets_its_own_generator():
    p = plan([shapes_frame(3)], samples=1)
    seen = {}

    class Recorder:
        def __call__(self, prompt, generator, width, height, output_type, **kwargs):
            seen["noise"] = [torch.randn(4, generator=g) for g in generator]
            seen["prompt"] = prompt
            return type("Out", (), {"images": [Image.new("RGB", (width, height))] * len(prompt)})

    run_batch(Recorder(), p.iloc[:2].to_dict("records"), {}, run_dir=None, mask_policy="mixed")
    for noise, seed in zip(seen["noise"], p["seed"].iloc[:2]):
        assert torch.equal(noise, torch.randn(4, generator=torch.Generator().manual_seed(int(seed))))
    assert seen["prompt"] == ["a red circle", "two blue squares"]


# ---------------------------------------------------------------------------------------------------------------
# Call arguments


def test_steps_override_on_a_consistency_scheduler_uses_ladd_sigmas(tiny_pipeline_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ladd.pipelines import load_pipeline
    from ladd.sampling import consistency_scheduler_config
    from ladd.timesteps import StudentTimesteps

    pipe = load_pipeline(tiny_pipeline_dir)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(consistency_scheduler_config(pipe.scheduler.config))
    defaults = {"sigmas": [1.0, 0.75, 0.5, 0.25], "guidance_scale": 0.0, "max_sequence_length": 0}
    kwargs = resolve_call_kwargs(pipe, defaults, steps=2, guidance=None)
    assert kwargs["sigmas"] == [1.0, 0.5] and kwargs["num_inference_steps"] == 2
    assert pipe.scheduler.config.stochastic_sampling
    with pytest.raises(BenchError, match="--steps 3"):
        resolve_call_kwargs(pipe, defaults, steps=3)
    assert resolve_call_kwargs(pipe, defaults, steps=4)["sigmas"] == [1.0, 0.75, 0.5, 0.25]
    # an exported student pins no sigmas (its scheduler spaces 4 steps itself); --steps 2 still means [1, .5]
    assert resolve_call_kwargs(pipe, {"num_inference_steps": 4}, steps=2)["sigmas"] == [1.0, 0.5]
    assert "sigmas" not in resolve_call_kwargs(pipe, {"num_inference_steps": 4})
    # a student trained on {1, .5}: its folder's timesteps decide, whatever its defaults pin
    two = StudentTimesteps.for_sampling([1.0, 0.5])
    assert resolve_call_kwargs(pipe, {"num_inference_steps": 2}, steps=1, timesteps=two)["sigmas"] == [1.0]
    with pytest.raises(BenchError, match="--steps 4"):
        resolve_call_kwargs(pipe, defaults, steps=4, timesteps=two)


def test_steps_override_drops_pinned_sigmas_on_other_schedulers(tiny_pipeline_dir):
    from ladd.pipelines import load_pipeline

    pipe = load_pipeline(tiny_pipeline_dir)
    kwargs = resolve_call_kwargs(pipe, {"sigmas": [1.0, 0.5], "guidance_scale": 2.0}, steps=10, guidance=1.5)
    assert "sigmas" not in kwargs and kwargs["num_inference_steps"] == 10 and kwargs["guidance_scale"] == 1.5
    with pytest.raises(BenchError, match="does not accept sampling default"):
        resolve_call_kwargs(pipe, {"clip_guidance": 1.0})


# ---------------------------------------------------------------------------------------------------------------
# Resuming and sharding reproduce an uninterrupted run, also for a stochastic sampler


@pytest.fixture
def stochastic_pipe(tiny_pipeline_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ladd.pipelines import load_pipeline
    from ladd.sampling import consistency_scheduler_config
    from ladd.timesteps import StudentTimesteps

    pipe = load_pipeline(tiny_pipeline_dir)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(consistency_scheduler_config(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


CALL = {"num_inference_steps": 4, "guidance_scale": 0.0, "max_sequence_length": 0}


def pixels(run_dir, p):
    return [np.asarray(Image.open(run_dir / path)) for path in p["path"]]


def test_sharded_and_resumed_runs_match_an_uninterrupted_one(stochastic_pipe, tmp_path):
    p = plan([shapes_frame(6)], samples=1)
    batches = make_batches(p, batch_size=2)

    whole = tmp_path / "whole"
    generate(stochastic_pipe, batches, whole, CALL, Journal(whole), progress=False)
    reference = pixels(whole, p)

    sharded = tmp_path / "sharded"
    for rank in (1, 0):  # any order: batches, not processes, fix the noise
        generate(stochastic_pipe, shard_batches(batches, rank, 2), sharded, CALL, Journal(sharded, rank),
                 progress=False)
    for a, b in zip(reference, pixels(sharded, p)):
        np.testing.assert_array_equal(a, b)

    # A batch cut short (one of its two images missing) is rerun whole; only the missing image is written.
    lost = whole / p["path"].iloc[1]
    kept = whole / p["path"].iloc[0]
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()
    assert generate(stochastic_pipe, batches, whole, CALL, Journal(whole), progress=False) == 1
    assert kept.stat().st_mtime_ns == kept_mtime
    for a, b in zip(reference, pixels(whole, p)):
        np.testing.assert_array_equal(a, b)

    manifest = merge_manifest(whole, recovered_rows(p, whole))
    assert len(manifest) == len(p) and not manifest.duplicated(["suite", "prompt_id", "sample_index"]).any()
    assert manifest["seconds_per_batch"].notna().all()


def test_stochastic_sampler_really_depends_on_the_global_rng(stochastic_pipe):
    """Guards the reseeding above: if diffusers ever routes renoise noise through the generators, this fails
    and the per-batch reseeding (and its documentation) can go."""
    call = dict(CALL, prompt=["a red circle"], height=32, width=32, output_type="np")
    images = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        images.append(stochastic_pipe(generator=[torch.Generator().manual_seed(5)], **call).images[0])
    assert not np.array_equal(images[0], images[1])


# ---------------------------------------------------------------------------------------------------------------
# Editing and inpainting plumbing


class FakeInpainter:
    """Stands in for an inpainting pipeline: fills the masked region with the source's mean colour."""

    def __call__(self, prompt, image, mask_image, strength, generator, width, height, output_type, **kwargs):
        assert strength == 1.0 and len(image) == len(mask_image) == len(prompt) == len(generator)
        out = []
        for source, mask in zip(image, mask_image):
            assert source.size == mask.size == (width, height)
            pixels = np.asarray(source).copy()
            pixels[np.asarray(mask) > 127] = pixels.reshape(-1, 3).mean(0).astype(np.uint8)
            out.append(Image.fromarray(pixels))
        return type("Out", (), {"images": out})


def test_inpainting_writes_sources_masks_and_records_the_policy(coco_dir, tmp_path):
    frame = load_suite("coco-inpaint", data_dir=coco_dir)
    p = plan([frame], samples=2, size=(40, 24))
    run_dir = tmp_path / "run"
    generate(FakeInpainter(), make_batches(p, 3), run_dir, {}, Journal(run_dir), mask_policy="mixed",
             progress=False)
    manifest = merge_manifest(run_dir)
    assert len(manifest) == 4
    for row in manifest.itertuples():
        mask, policy = make_mask(row.prompt_id, row.seed, 40, 24, "mixed")
        assert row.mask_policy == policy
        np.testing.assert_array_equal(np.asarray(Image.open(run_dir / row.mask_path)) > 127, mask)
        source = Image.open(run_dir / row.source_path)
        assert source.size == (40, 24)  # centre-cropped and resized to the generation size
        assert row.target_prompt == row.prompt
    assert manifest["source_path"].nunique() == 2  # one prepared source per image, shared by its samples


def test_editing_runs_an_image_to_image_variant_of_a_text_to_image_model(pie_bench_dir, tiny_pipeline_dir,
                                                                          tmp_path):
    from ladd.pipelines import load_pipeline

    data_dir, _ = pie_bench_dir
    pipe = load_pipeline(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    p = plan([load_suite("pie-bench", data_dir=data_dir)], samples=1)
    run_dir = tmp_path / "edit"
    generate(pipe, make_batches(p, 2), run_dir, CALL, Journal(run_dir), progress=False)
    manifest = merge_manifest(run_dir)
    assert manifest["source_prompt"].tolist() == ["a cat sitting on a bench", "a red car"]
    assert all((run_dir / s).is_file() for s in manifest["source_path"])
    assert Image.open(run_dir / manifest["path"].iloc[0]).size == (32, 32)
