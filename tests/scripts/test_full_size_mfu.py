"""scripts/full_size_mfu.py at its test size: the FLOP counts it rests on, the phase split, and a whole run (MFU,
sampling throughput, the one-process FSDP smoke) on the CPU."""

import re

import pytest
import torch
from accelerate import Accelerator

from tests.scripts import load_script

full_size_mfu = load_script("full_size_mfu")
TINY = full_size_mfu.ARCHITECTURES["tiny"]


def test_model_flops_scale_with_the_batch_and_checkpointing_adds_the_recomputation():
    accelerator = Accelerator(cpu=True)
    cfg = full_size_mfu.ladd_config(2, "no", checkpointing=False)
    models, optimizers = full_size_mfu.build_ladd(TINY, cfg, "cpu")

    def step(n):
        batch = full_size_mfu.random_batch(TINY, n, "cpu")
        return lambda: full_size_mfu.ladd_iteration(0, batch, models, optimizers, cfg, accelerator)

    one, phases = full_size_mfu.counted(step(1))
    two, _ = full_size_mfu.counted(step(2))
    assert two == 2 * one  # what lets the script count one sample and scale
    assert set(phases) == set(full_size_mfu.PHASES) and 0 < sum(phases.values()) < one
    full_size_mfu.set_checkpointing(models, True)
    recomputed, _ = full_size_mfu.counted(step(1))
    assert recomputed > one


def test_mfu_is_model_flops_per_second_over_the_peak():
    assert full_size_mfu.mfu(989e12 * 0.4, 1.0, 989.0) == pytest.approx(0.4)
    assert full_size_mfu.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert full_size_mfu.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert full_size_mfu.peak_tflops("NVIDIA H200", None) == 989.0
    assert full_size_mfu.peak_tflops("some GPU", 123.0) == 123.0
    with pytest.raises(SystemExit, match="--peak-tflops"):
        full_size_mfu.peak_tflops("some GPU", None)


def test_tiny_run_reports_mfu_per_phase_sampling_throughput_and_the_fsdp_smoke(capsys):
    full_size_mfu.main(["--arch", "tiny", "--device", "cpu", "--peak-tflops", "0.05", "--train-batch", "2",
                        "--repeats", "1", "--batches", "1", "2", "--sampling-repeats", "1", "--fsdp-iterations", "2"])
    out = capsys.readouterr().out
    mfu, sampling, fsdp = re.split(r"^## .*$", out, flags=re.M)[1:]
    rows = {re.sub(r"^\| (&nbsp;)*", "", line.split(" | ")[0]): line.split(" | ") for line in mfu.splitlines()
            if line.startswith("| ") and "---" not in line}
    ladd, phases = rows["LADD, checkpointing"], [rows[key] for key in rows if key.startswith(("student forward",
                                                                                              "generator", "discr"))]
    assert len(phases) == 3
    # the phases add up to the iteration's FLOPs; each row's MFU is its TFLOP/s over the peak
    assert sum(float(p[1]) for p in phases) == pytest.approx(float(ladd[1]), rel=1e-3)
    for row in (ladd, *phases):
        assert float(row[4].strip("*| %")) / 100 == pytest.approx(float(row[3]) / 0.05, rel=0.05, abs=1e-3)
    assert "HFU" in mfu and "no checkpointing" in mfu
    speed_ups = [float(x) for x in re.findall(r"\*\*([\d.]+)x\*\*", sampling)]
    assert len(speed_ups) == 2 and min(speed_ups) > 2  # 4 steps against 50 doubled by CFG
    assert "FSDP2 smoke, one process (gloo): 2 LADD iterations" in fsdp and "losses finite" in fsdp
    assert "meta device" not in fsdp and not torch.distributed.is_initialized()
