"""scripts/full_size_cost.py at its test size: the same random-architecture pipeline, sampling and LADD training
code that the GPU run uses at SD3-medium's size."""

import re

import torch

from tests.scripts import load_script

full_size_cost = load_script("full_size_cost")


def speed_ups(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\*\*([\d.]+)x\*\*", text)]


def test_tiny_run_times_sampling_and_both_training_recipes(capsys):
    full_size_cost.main(["--arch", "tiny", "--device", "cpu", "--repeats", "1", "--train-repeats", "1",
                         "--train-batch", "2", "--fast-decoder"])
    out = capsys.readouterr().out
    sampling, training = out.split("## Training cost")
    full, latents, text, fast_decoder = speed_ups(sampling)
    assert min(full, latents, fast_decoder) > 2  # 4 steps against 50 doubled by CFG
    assert "TAESD-sized AutoencoderTiny" in sampling and "text encoding alone" in sampling
    assert "Batch 2 of 4x16x16 latents with 24 text tokens" in training  # 12 CLIP + 12 T5 tokens
    assert "2 discriminator heads" in training
    assert "L_distill with the teacher's unconditional forward" in training
    assert len(speed_ups(training)) == 2 and all(s > 1 for s in speed_ups(training))


def test_sd3_medium_architecture_has_the_published_sizes():
    arch = full_size_cost.ARCHITECTURES["sd3-medium"]
    with torch.device("meta"):
        transformer = full_size_cost.transformer_for(arch)
    assert round(sum(p.numel() for p in transformer.parameters()) / 1e9, 2) == 2.03
    assert transformer.config.joint_attention_dim == 4096 and transformer.config.pooled_projection_dim == 2048


def test_random_pipeline_generates_at_the_architecture_size():
    arch = full_size_cost.ARCHITECTURES["tiny"]
    pipe = full_size_cost.random_sd3(arch, "cpu", torch.float32)
    image = pipe("a red circle", num_inference_steps=2, height=arch["resolution"], width=arch["resolution"],
                 max_sequence_length=arch["t5_length"]).images[0]
    assert image.size == (arch["resolution"], arch["resolution"])
