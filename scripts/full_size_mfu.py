"""Model FLOPs utilisation of the full-size LADD iteration, sampling throughput of the 4-step student against the
50-step teacher, and a one-GPU FSDP smoke run at full size: the GPU measurements of docs/ladd.md ("Scaling past one
machine"), on SD3-medium's architecture with random weights (scripts/full_size_cost.py builds the same models).

    python scripts/full_size_mfu.py                    # CUDA, bf16; a few minutes on one H100/H200
    python scripts/full_size_mfu.py --arch tiny --device cpu --peak-tflops 0.1 --batches 1 2 --train-batch 2
                                                       # the same code at test size (tests/scripts)

1. MFU: one `ladd.train.ladd_iteration` (the paper's recipe, `LaddConfig`'s defaults: heads on every block; fp32
   master weights, bf16 autocast, gradient checkpointing as `ladd.train ... mixed_precision=bf16
   gradient_checkpointing=true` trains). Model FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on
   one sample without checkpointing (MFU counts no recomputation) and scaled by the batch (every op is per sample);
   counted again with checkpointing they give the hardware FLOPs (HFU). MFU = model FLOPs / seconds / the GPU's
   dense bf16 peak (NVIDIA's datasheet: H100 SXM and H200 989 TFLOP/s; `--peak-tflops` for others). The iteration
   is split into the student's forward, the generator step and the discriminator step (each with its AdamW step),
   each with its own MFU, to show what bounds the whole; a plain diffusion fine-tuning iteration of the same student
   is the reference; the iteration without checkpointing is timed too if it fits.
2. Sampling: images per second of text encoding + denoising (latents out: the decoder is the same for both), the
   teacher at SD3's defaults (50 steps, CFG 7) against the student (4 consistency steps, no guidance), at batch
   1, 4 and 16.
3. FSDP smoke: `ladd.sharding` on one process (a world of one over NCCL): teacher and student sharded with bf16
   parameters over fp32 shards, the heads replicated, a few LADD iterations, the EMA of the shards, and the export's
   gather.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import transformers
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch.utils.flop_counter import FlopCounterMode

import ladd.train as ladd_train
from bench.timing import alternating_medians, plain_iteration
from ladd.checkpoint import student_pipeline
from ladd.config import load_config
from ladd.sharding import gather_ema_student, join_process_group, launcher_plugin, replicate_heads, shard_models
from ladd.train import assemble_training, freeze, init_student, ladd_iteration


def sibling_script(name: str):
    """Another script of this folder as a module (scripts/ is not a package): full_size_cost's architectures and
    random pipeline, so both scripts measure the same models."""
    module_name = f"scripts_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, Path(__file__).with_name(f"{name}.py"))
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


full_size_cost = sibling_script("full_size_cost")
ARCHITECTURES = full_size_cost.ARCHITECTURES
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched in order against the device name
# ("NVIDIA H100 80GB HBM3" is the SXM part).
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
PHASES = {"generator_step": "generator step: teacher on fake with grad, heads, backward into the student, AdamW",
          "discriminator_step": "discriminator step: teacher on real, heads forward and backward, AdamW"}


def peak_tflops(device_name: str, override: float | None) -> float:
    if override:
        return override
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    raise SystemExit(f"no dense bf16 peak known for {device_name!r}: pass --peak-tflops")


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Achieved model FLOPs per second over the peak."""
    return flops / seconds / (peak * 1e12)


def random_batch(arch: dict, n: int, device: str) -> dict:
    """A training batch of the architecture's shapes: latents at the sampling resolution, text embeddings of the
    pipeline's length (77 CLIP + T5 tokens, T5's width) and pooled CLIP embeddings."""
    latent = arch["resolution"] // 2 ** (len(arch["vae"]["block_out_channels"]) - 1)
    text = arch["clip_length"] + arch["t5_length"]
    pooled = arch["clip_l"]["projection_dim"] + arch["clip_g"]["projection_dim"]
    generator = torch.Generator().manual_seed(n)
    return {"latents": torch.randn(n, arch["vae"]["latent_channels"], latent, latent, generator=generator),
            "prompt_embeds": torch.randn(n, text, arch["t5"]["d_model"], generator=generator),
            "pooled_prompt_embeds": torch.randn(n, pooled, generator=generator)}


def on(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def ladd_config(n: int, mixed_precision: str, checkpointing: bool):
    return load_config(None, [f"batch_size={n}", f"mixed_precision={mixed_precision!r}",
                              f"gradient_checkpointing={str(checkpointing).lower()}"])


def build_ladd(arch: dict, cfg, device: str, shard=None):
    """A frozen random teacher of the architecture (fp32), the student as its copy, heads and optimisers."""
    torch.manual_seed(0)
    with torch.device(device):
        teacher = freeze(full_size_cost.transformer_for(arch))
    models, optimizers = assemble_training(cfg, teacher, init_student(cfg, teacher), shard=shard)
    models.discriminator.to(device)
    return models, optimizers


def set_checkpointing(models, on_: bool) -> None:
    for transformer in (models.student, models.teacher):
        transformer.enable_gradient_checkpointing() if on_ else transformer.disable_gradient_checkpointing()


@contextmanager
def phase_meter(record: dict, synchronize, counter: FlopCounterMode | None = None):
    """Seconds and FLOPs of each call of ladd.train's generator_step and discriminator_step: `ladd_iteration` looks
    them up in its module at every call, so wrapping the module's names instruments it unchanged. What else the
    iteration does (the student's forward, the noise) is the remainder."""
    originals = {name: getattr(ladd_train, name) for name in PHASES}

    def metered(name, step):
        def wrapper(*args, **kwargs):
            synchronize()
            flops, started = counter.get_total_flops() if counter else 0, time.perf_counter()
            result = step(*args, **kwargs)
            synchronize()
            record.setdefault(name, {"seconds": [], "flops": 0})
            record[name]["seconds"].append(time.perf_counter() - started)
            record[name]["flops"] += (counter.get_total_flops() if counter else 0) - flops
            return result
        return wrapper

    for name, step in originals.items():
        setattr(ladd_train, name, metered(name, step))
    try:
        yield record
    finally:
        for name, step in originals.items():
            setattr(ladd_train, name, step)


def counted(step) -> tuple[int, dict]:
    """FLOPs of one call of `step`, in total and per phase."""
    phases = {}
    with FlopCounterMode(display=False) as counter, phase_meter(phases, lambda: None, counter):
        step()
    return counter.get_total_flops(), {name: p["flops"] for name, p in phases.items()}


@dataclass
class LaddMeasurement:
    """One LADD iteration at one batch: FLOPs (model: no recomputation; hardware: with it), seconds, per phase."""
    batch: int
    model_flops: float
    hardware_flops: float
    plain_flops: float
    phase_flops: dict[str, float]
    seconds: dict[str, float]  # "ladd" and "plain", with checkpointing
    phase_seconds: dict[str, float]
    no_checkpointing: float | None  # seconds, None if it did not fit
    peak_gib: float | None
    setting: str


def measure_ladd(arch: dict, device: str, n: int, repeats: int, accelerator, synchronize) -> LaddMeasurement:
    mixed_precision = accelerator.mixed_precision
    cfg = ladd_config(n, mixed_precision, checkpointing=False)
    models, optimizers = build_ladd(arch, cfg, device)
    one, full = on(random_batch(arch, 1, device), device), on(random_batch(arch, n, device), device)

    def ladd_step(batch):
        return lambda i=0: ladd_iteration(i, batch, models, optimizers, cfg, accelerator)

    def plain_step(batch):
        return lambda i=0: plain_iteration(models.student, optimizers.student, batch, accelerator)

    # model FLOPs: one sample without recomputation, scaled by the batch
    model_flops, phase_flops = counted(ladd_step(one))
    plain_flops = counted(plain_step(one))[0]
    set_checkpointing(models, True)
    hardware_flops = counted(ladd_step(one))[0]

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = alternating_medians({"ladd": ladd_step(full), "plain": plain_step(full)}, repeats,
                                  synchronize=synchronize)
    record, totals = {}, []
    with phase_meter(record, synchronize):
        for i in range(repeats):
            synchronize()
            started = time.perf_counter()
            ladd_step(full)(i)
            synchronize()
            totals.append(time.perf_counter() - started)
    phase_seconds = {name: statistics.median(p["seconds"]) for name, p in record.items()}
    phase_seconds["rest"] = max(statistics.median(totals) - sum(phase_seconds.values()), 1e-9)
    phase_flops["rest"] = model_flops - sum(phase_flops.values())
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    set_checkpointing(models, False)
    try:
        no_checkpointing = alternating_medians({"ladd": ladd_step(full)}, repeats, synchronize=synchronize)["ladd"]
    except torch.OutOfMemoryError:
        no_checkpointing = None
    heads = sum(p.numel() for p in models.discriminator.parameters())
    setting = (f"Batch {n} of {'x'.join(str(d) for d in full['latents'].shape[1:])} latents with "
               f"{full['prompt_embeds'].shape[1]} text tokens; student = teacher = "
               f"{full_size_cost.parameters(models.student)}-parameter transformer (fp32 weights, {mixed_precision} "
               f"autocast), {len(models.features.blocks)} heads ({heads / 1e6:.1f}M parameters); median of {repeats} "
               "iterations after two warm-ups")
    return LaddMeasurement(n, n * model_flops, n * hardware_flops, n * plain_flops,
                           {k: n * v for k, v in phase_flops.items()}, seconds, phase_seconds, no_checkpointing,
                           peak_gib, setting)


def mfu_lines(m: LaddMeasurement, peak: float) -> list[str]:
    def row(label, flops, secs, bold=False):
        share = f"{mfu(flops, secs, peak):.1%}"
        return f"| {label} | {flops / 1e12:.4g} | {secs:.3f} | {flops / secs / 1e12:.4g} | " + \
            (f"**{share}**" if bold else share) + " |"

    return [
        f"{m.setting}; MFU against {peak:g} TFLOP/s:",
        "",
        "| iteration | model TFLOP | seconds | TFLOP/s | MFU |",
        "|---|---|---|---|---|",
        row("plain diffusion fine-tuning (student fwd+bwd, AdamW), checkpointing", m.plain_flops, m.seconds["plain"]),
        row("LADD, checkpointing", m.model_flops, m.seconds["ladd"], bold=True),
        row("&nbsp;&nbsp;student forward and noise", m.phase_flops["rest"], m.phase_seconds["rest"]),
        *(row(f"&nbsp;&nbsp;{label}", m.phase_flops[name], m.phase_seconds[name]) for name, label in PHASES.items()),
        row("LADD, no checkpointing", m.model_flops, m.no_checkpointing) if m.no_checkpointing else
        "| LADD, no checkpointing | | did not fit | | |",
        "",
        f"With checkpointing the GPU computes {m.hardware_flops / 1e12:.4g} TFLOP per iteration "
        f"({m.hardware_flops / m.model_flops:.2f}x the model's: the blocks' forward again in backward), "
        f"HFU {mfu(m.hardware_flops, m.seconds['ladd'], peak):.1%}."
        + (f" Peak GPU memory with checkpointing {m.peak_gib:.1f} GiB." if m.peak_gib is not None else ""),
    ]


def sampling_throughput(arch: dict, device: str, batches: list[int], repeats: int, synchronize) -> list[str]:
    """Images per second, teacher vs student, text encoding + denoising, at each batch."""
    pipe = full_size_cost.random_sd3(arch, device, torch.bfloat16 if device.startswith("cuda") else torch.float32)
    student = full_size_cost.quiet(student_pipeline(pipe, pipe.transformer))  # the same cost per step
    common = {"height": arch["resolution"], "width": arch["resolution"], "max_sequence_length": arch["t5_length"],
              "output_type": "latent"}
    settings = {"teacher": (pipe, {**common, "num_inference_steps": 50, "guidance_scale": arch["guidance"]}),
                "student": (student, {**common, "num_inference_steps": 4, "guidance_scale": 0.0})}
    lines = [f"Text encoding + denoising at {arch['resolution']}x{arch['resolution']}, images per second, median of "
             f"{repeats} alternating calls after one warm-up:", "",
             f"| batch | teacher (50 steps, CFG {arch['guidance']}) | student (4 steps) | speed-up |",
             "|---|---|---|---|"]
    prompts = full_size_cost.PROMPTS.read_text().splitlines()
    for n in batches:
        batch = (prompts * n)[:n]

        def call(name):
            target, kwargs = settings[name]
            return lambda i: target(batch, generator=torch.Generator().manual_seed(i), **kwargs)

        seconds = alternating_medians({name: call(name) for name in settings}, repeats, warmup=1,
                                      synchronize=synchronize)
        teacher, student_rate = n / seconds["teacher"], n / seconds["student"]
        lines.append(f"| {n} | {teacher:.2f} | {student_rate:.2f} | **{student_rate / teacher:.1f}x** |")
    del pipe, student
    return lines


def fsdp_smoke(arch: dict, device: str, n: int, iterations: int, accelerator, synchronize) -> list[str]:
    """ladd.train's sharded path at full size in one process: a world of one, the same calls as under a launcher."""
    created = join_process_group(torch.device(device))
    try:
        cfg = ladd_config(n, accelerator.mixed_precision, checkpointing=True)
        shard = shard_models(accelerator.mixed_precision, launcher_plugin())
        models, optimizers = build_ladd(arch, cfg, device, shard=shard)
        models.discriminator = replicate_heads(models.discriminator, torch.device(device))
        ema = EMAModel(models.student.parameters(), decay=cfg.student.ema_decay)
        batch = on(random_batch(arch, n, device), device)
        seconds, losses = [], []
        for i in range(iterations):
            synchronize()
            started = time.perf_counter()
            stats = ladd_iteration(i, batch, models, optimizers, cfg, accelerator)
            ema.step(models.student.parameters())
            synchronize()
            seconds.append(time.perf_counter() - started)
            losses.append((stats["g_loss"], stats["d_loss"]))
        exported = gather_ema_student(ema, models.student)
        meta = any(t.is_meta for t in exported.state_dict().values())
        backend = torch.distributed.get_backend()
    finally:
        if created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    finite = all(math.isfinite(x) for pair in losses for x in pair)
    memory = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
              if device.startswith("cuda") else "")
    return [f"FSDP2 smoke, one process ({backend}): {iterations} LADD iterations at batch {n} with the student and "
            f"teacher sharded, {statistics.median(seconds[1:] or seconds):.3f} s per iteration after the "
            f"first, losses {'finite' if finite else 'NOT FINITE'} (last G {losses[-1][0]:.4f}, D {losses[-1][1]:.4f})"
            f"{memory}; the EMA student gathered for export: {full_size_cost.parameters(exported)} parameters"
            f"{', some left on the meta device' if meta else ''}."]


def release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="sd3-medium")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed LADD iterations")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="sampling batches")
    parser.add_argument("--sampling-repeats", type=int, default=2)
    parser.add_argument("--fsdp-iterations", type=int, default=3)
    parser.add_argument("--sections", nargs="+", choices=("mfu", "sampling", "fsdp"), default=["mfu", "sampling",
                                                                                                 "fsdp"])
    args = parser.parse_args(argv)
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    arch = ARCHITECTURES[args.arch]
    cuda = args.device.startswith("cuda")
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    peak = peak_tflops(name, args.peak_tflops)
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    print(f"# {args.arch} architecture, random weights · {name} (dense bf16 peak {peak:g} TFLOP/s) · "
          f"torch {torch.__version__}\n")
    if "mfu" in args.sections:
        print("## LADD iteration: model FLOPs utilisation\n")
        measured = measure_ladd(arch, args.device, args.train_batch, args.repeats, accelerator, synchronize)
        print("\n".join(mfu_lines(measured, peak)) + "\n")
        release(args.device)
    if "sampling" in args.sections:
        print("## Sampling throughput\n")
        print("\n".join(sampling_throughput(arch, args.device, args.batches, args.sampling_repeats,
                                            synchronize)) + "\n")
        release(args.device)
    if "fsdp" in args.sections:
        print("## FSDP2 at full size on one GPU\n")
        print("\n".join(fsdp_smoke(arch, args.device, args.train_batch, args.fsdp_iterations, accelerator,
                                   synchronize)))


if __name__ == "__main__":
    main()
