"""scripts/memory_plan.py: exact parameter counts from the published configs, an activation census that is linear in
tokens, a model that reproduces the one measured peak, and the arithmetic of DDP against FSDP."""

import pytest
import torch

from ladd.config import LaddConfig, load_config
from ladd.paths import CONFIGS_DIR
from tests.scripts import load_script

memory_plan = load_script("memory_plan")
GiB = memory_plan.GiB


def test_the_architectures_have_their_published_sizes():
    shapes_heads = load_config(CONFIGS_DIR / "ladd-shapes.toml")
    medium = memory_plan.sizes_of(memory_plan.ARCHITECTURES["sd3-medium"], shapes_heads)
    large = memory_plan.sizes_of(memory_plan.ARCHITECTURES["sd3.5-large"], LaddConfig())
    assert round(medium.student / 1e9, 2) == 2.03 and round(medium.heads / 1e6, 1) == 22.6  # docs/ladd-results.md
    assert round(large.student / 1e9, 2) == 8.06 and (large.blocks, large.width) == (38, 2432)
    assert medium.hooked == medium.blocks == 24 and medium.image_tokens + medium.text_tokens == 4429


def test_the_model_reproduces_the_measured_peak_of_sd3_medium():
    """47.7 GiB: batch 4 on one H100, fp32 weights, bf16 autocast, checkpointing, no EMA, two recipes' heads."""
    cfg = load_config(CONFIGS_DIR / "ladd-shapes.toml")
    sizes = memory_plan.sizes_of(memory_plan.ARCHITECTURES["sd3-medium"], cfg)
    census, drift = memory_plan.census_of("sd3-medium", sizes, cfg)
    assert drift < 0.01  # bytes per token do not depend on the sequence length: the census scales
    measured = memory_plan.Setting("single", checkpointing=True, gpus=1, ema=False, head_sets=2)
    assert memory_plan.peak(sizes, census, measured, 4) / GiB == pytest.approx(memory_plan.MEASURED_GIB, rel=0.05)


def test_the_census_counts_activations_not_weights():
    sizes = memory_plan.sizes_of(memory_plan.ARCHITECTURES["tiny"], LaddConfig())
    census, drift = memory_plan.census_of("tiny", sizes, LaddConfig())
    assert drift < 0.05
    # a block keeps far more than its two fp32 inputs (what checkpointing keeps)
    assert census.block > 5 * census.checkpointed_block and census.head > 0
    # a linear layer under autocast keeps the bf16 copy of its input and of its weight: only the input counts
    layer = torch.nn.Linear(10, 300)
    x = torch.randn(4, 10, requires_grad=True)
    assert memory_plan.saved_bytes(lambda: layer(x), layer) == 4 * 10 * 2


def test_sharding_and_checkpointing_move_the_peak_as_they_should():
    sizes = memory_plan.Sizes(student=8_000_000_000, block=200_000_000, root=400_000_000, heads=100_000_000,
                              blocks=38, hooked=38, width=2432, image_tokens=4096, text_tokens=333)
    census = memory_plan.Census(block=74.0, head=3.0)
    peak = lambda strategy, checkpointing, batch=4, gpus=8: memory_plan.peak(  # noqa: E731
        sizes, census, memory_plan.Setting(strategy, checkpointing, gpus), batch) / GiB
    # state: 20 bytes a student parameter under DDP (weights, buckets, AdamW, EMA) + the teacher; FSDP divides
    # those, not the replicated heads (weights, buckets, AdamW)
    assert memory_plan.model_state(sizes, memory_plan.Setting("ddp", True, 8)) == pytest.approx(
        24 * 8e9 + 16 * 1e8)
    assert memory_plan.model_state(sizes, memory_plan.Setting("fsdp-full", True, 8)) == pytest.approx(
        20 * 8e9 / 8 + 16 * 1e8)
    assert peak("ddp", True) > 170 > peak("fsdp-full", True) * 3  # an 8B student cannot live on one 80 GB GPU
    assert peak("fsdp-full", True) < peak("fsdp-grad-op", True) < peak("ddp", True)
    assert peak("fsdp-full", False) > peak("fsdp-full", True)
    assert peak("fsdp-full", True, gpus=16) < peak("fsdp-full", True, gpus=8)
    assert peak("fsdp-full", True, batch=8) > peak("fsdp-full", True, batch=4)


def test_the_tiny_run_prints_every_strategy(capsys):
    memory_plan.main(["--arch", "tiny", "--gpus", "2", "--batches", "1", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| tiny | ") and "activation" not in line]
    assert len(rows) == 1 + 3 * 2  # the sizes row, then each strategy with and without checkpointing
    assert "| tiny | FSDP, full shard | yes |" in out and "GiB per GPU for one iteration, 2 GPUs" in out
