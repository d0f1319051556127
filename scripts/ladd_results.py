"""LADD on the shapes world, one script, one run: quality, sampling speed, and training cost.

    python scripts/ladd_results.py [--teacher models/shapes-sd3] [--student models/shapes-turbo]

1. Quality: `bench.run` on the 256 held-out shapes prompts for the student at 1, 2 and 4 steps, the teacher at
   50 steps with CFG, and the teacher at 1 and 4 Euler steps (CFG): exact-evaluator accuracy (overall and per
   category), shapes-CLIP score, and Fréchet distance in shapes-CLIP space to rendered ground truth.
2. Speed: wall-clock per image, student 4-step vs teacher 50-step + CFG, same prompts and batch size, the two
   measured alternately in one process.
3. Training cost: one LADD iteration vs one plain diffusion fine-tuning iteration of the same student (the given
   one, whose depth may differ from the teacher's) at the same batch size, measured alternately.
Prints markdown (docs/ladd-results.md holds this script's output).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from accelerate import Accelerator

from bench.select import score_row, shapes_scores
from bench.timing import alternating_medians, ladd_work, plain_iteration
from ladd.config import load_config
from ladd.data import LatentBuckets
from ladd.paths import CONFIGS_DIR, REPO_ROOT, RESULTS_DIR
from ladd.pipelines import load_pipeline, swap_vae
from ladd.sampling import read_sampling_defaults
from ladd.shapes.heldout import load_heldout
from ladd.train import build_training, ladd_iteration


def quality(teacher: Path, student: Path, out: Path, samples_per_prompt: int = 1) -> list[str]:
    runs = [
        ("student, 1 step", student, ["--steps", "1"]),
        ("student, 2 steps", student, ["--steps", "2"]),
        ("student, 4 steps", student, []),
        ("teacher, 50 steps + CFG", teacher, []),
        ("teacher, 4 Euler steps + CFG", teacher, ["--steps", "4"]),
        ("teacher, 1 Euler step + CFG", teacher, ["--steps", "1"]),
    ]
    samples = ["--samples-per-prompt", str(samples_per_prompt)] if samples_per_prompt > 1 else []
    scores = {label: shapes_scores(model, out / label.replace(",", "").replace(" + ", "-").replace(" ", "-"),
                                   extra + samples)
              for label, model, extra in runs}
    reference = scores["teacher, 50 steps + CFG"]["accuracy"]
    lines = ["| model | accuracy % | vs teacher 50+CFG | single | two-object | counting | size | CLIP score | FD (CLIP) |",
             "|" + "---|" * 9]
    lines += [score_row(label, s, relative_to=reference) for label, s in scores.items()]
    return lines


def seconds_per_image(pipe, prompts, kwargs) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) per image of one pipeline call."""
    wall, cpu = time.perf_counter(), time.process_time()
    pipe(prompts, generator=torch.Generator().manual_seed(0), **kwargs)
    return (time.perf_counter() - wall) / len(prompts), (time.process_time() - cpu) / len(prompts)


# stage -> (method, the pipeline component that owns it; None: the pipeline itself)
STAGES = {"prompt encoding (tokenisers + text encoders)": ("encode_prompt", None),
          "transformer": ("forward", "transformer"),
          "VAE decode": ("decode", "vae")}


@contextlib.contextmanager
def stage_timer(pipe):
    """Wall-clock seconds each stage of `pipe`'s calls spends while the block runs (STAGES: the pipeline's
    `encode_prompt`, every transformer forward, the VAE decode), by patching those methods on the instances for the
    block. What a whole call spends beyond them (latent preparation, scheduler steps, post-processing to PIL) is its
    wall clock minus their sum."""
    spent = collections.Counter()

    def timed(stage, original):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - started
        return wrapper

    with contextlib.ExitStack() as patches:  # mock restores an instance attribute (a sliced decode) or removes its own
        for stage, (method, component) in STAGES.items():
            owner = pipe if component is None else getattr(pipe, component)
            patches.enter_context(mock.patch.object(owner, method, timed(stage, getattr(owner, method))))
        yield spent


def stage_table(stages: dict[str, list[dict]], walls: dict[str, list[float]], label: str, batch_size: int) -> list[str]:
    """Milliseconds per image in each stage, median over the repeats, for the teacher and the student."""
    median = {name: {stage: 1000 * statistics.median(s.get(stage, 0.0) for s in samples) / batch_size
                     for stage in STAGES} for name, samples in stages.items()}
    whole = {name: 1000 * statistics.median(samples) for name, samples in walls.items()}
    lines = [f"Where the time goes ({label}; milliseconds per image, median of the same repeats):", "",
             "| stage | teacher | student |", "|---|---|---|"]
    lines += [f"| {stage} | {median['teacher'][stage]:.2f} | {median['student'][stage]:.2f} |" for stage in STAGES]
    rest = {name: whole[name] - sum(median[name].values()) for name in whole}
    lines.append(f"| the rest of the call | {rest['teacher']:.2f} | {rest['student']:.2f} |")
    lines.append(f"| whole call | {whole['teacher']:.2f} | {whole['student']:.2f} |")
    return lines


def speed(teacher: Path, student: Path, batch_size: int, repeats: int, vae: Path | None = None) -> list[str]:
    """Seconds per image for the whole pipeline (text encoding, denoising, VAE decode) and for text encoding +
    denoising alone (`output_type="latent"`): at 64 px the VAE decode is a fixed cost that both samplers pay.
    With `vae` (e.g. models/shapes-slim-vae), also the whole pipeline with both decoding through it. Last, where the
    time of the last whole-pipeline row goes, stage by stage (`stage_timer`, over the same timed calls).

    The speed-up is in wall-clock time; beside it, in CPU time: on a shared machine the time other tenants take
    (CPU steal, waiting for a core) inflates the wall clock of a 0.7 s student call and a 10 s teacher call
    differently, and is not counted in this process's CPU time."""
    prompts = load_heldout()["prompt"].tolist()[:batch_size]
    rows = {"full pipeline (PIL images)": ("pil", None)}
    if vae is not None:  # a fair comparison: the zoo's own VAE installed the same way (channels-last) as `vae`
        rows["full pipeline, both decoding with the zoo VAE, channels-last"] = ("pil", teacher / "vae")
        rows[f"full pipeline, both decoding with {vae.name}, channels-last"] = ("pil", vae)
    rows["text encoding + denoising (latents)"] = ("latent", None)
    setups = {}
    for name, folder in (("teacher", teacher), ("student", student)):
        d = read_sampling_defaults(folder)
        kwargs = {k: d[k] for k in ("num_inference_steps", "guidance_scale", "max_sequence_length") if k in d}
        for vae_dir in dict.fromkeys(v for _, v in rows.values()):
            pipe = load_pipeline(folder)
            if vae_dir is not None:
                swap_vae(pipe, vae_dir)
            pipe.set_progress_bar_config(disable=True)
            setups[(name, vae_dir)] = (pipe, {**kwargs, "height": 64, "width": 64})
    for pipe, kwargs in setups.values():  # warm-up
        seconds_per_image(pipe, prompts, kwargs)
    times = {(name, label): [] for name in ("teacher", "student") for label in rows}
    stages = {key: [] for key in times}
    for _ in range(repeats):
        for (name, label), samples in times.items():
            output, vae_dir = rows[label]
            pipe, kwargs = setups[(name, vae_dir)]
            with stage_timer(pipe) as spent:
                samples.append(seconds_per_image(pipe, prompts, {**kwargs, "output_type": output}))
            stages[(name, label)].append(dict(spent))
    median = {key: statistics.median(wall for wall, _ in samples) for key, samples in times.items()}
    median_cpu = {key: statistics.median(cpu for _, cpu in samples) for key, samples in times.items()}
    describe = {n: f"{k['num_inference_steps']} steps, guidance {k['guidance_scale']}"
                for (n, vae_dir), (_, k) in setups.items() if vae_dir is None}
    lines = [
        f"Batch of {batch_size} held-out prompts at 64x64, median of {repeats} alternating repeats, "
        f"{torch.get_num_threads()} CPU threads (seconds per image):",
        "",
        f"| what is timed | teacher ({describe['teacher']}) | student ({describe['student']}) | speed-up "
        "| speed-up in CPU time |",
        "|---|---|---|---|---|",
    ]
    for label in rows:
        t, s = median[("teacher", label)], median[("student", label)]
        cpu_ratio = median_cpu[("teacher", label)] / median_cpu[("student", label)]
        lines.append(f"| {label} | {t:.4f} | {s:.4f} | **{t / s:.1f}x** | {cpu_ratio:.1f}x |")
    last_decoding = [label for label, (output, _) in rows.items() if output == "pil"][-1]
    lines += ["", *stage_table({n: stages[(n, last_decoding)] for n in ("teacher", "student")},
                               {n: [wall for wall, _ in times[(n, last_decoding)]] for n in ("teacher", "student")},
                               last_decoding, batch_size)]
    return lines


def describe_transformer(model) -> str:
    return f"{model.config.num_layers} blocks, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"


def training_cost(config: Path, teacher: Path, data: Path, batch_size: int, repeats: int,
                  overrides: list[str] = (), student: Path | None = None) -> list[str]:
    """One LADD iteration against one plain diffusion fine-tuning iteration of the same student, alternately. The
    student starts from `student` (e.g. a shallower one: its own depth decides what the plain iteration costs) or,
    without it, as a copy of the teacher."""
    student_from = [f"student_from={json.dumps(str(student))}"] if student else []
    cfg = load_config(config, [f"teacher={json.dumps(str(teacher))}", f"data={json.dumps(str(data))}",
                               f"batch_size={batch_size}", *student_from, *overrides])
    torch.manual_seed(0)
    models, optimizers = build_training(cfg)
    accelerator = Accelerator(cpu=True)
    latents = LatentBuckets(data)
    plain_optimizer = torch.optim.AdamW(models.student.parameters(), lr=1e-6)
    seconds = alternating_medians({
        "ladd": lambda i: ladd_iteration(i, latents.batch(i, batch_size, 0), models, optimizers, cfg, accelerator),
        "plain": lambda i: plain_iteration(models.student, plain_optimizer, latents.batch(i, batch_size, 0),
                                           accelerator, cfg.max_grad_norm),
    }, repeats)
    heads = sum(p.numel() for p in models.discriminator.parameters())
    return [
        f"Batch {batch_size}, student {describe_transformer(models.student)}, teacher "
        f"{describe_transformer(models.teacher)}, {len(models.features.blocks)} discriminator heads "
        f"({heads / 1e6:.2f}M parameters), median of {repeats} alternating iterations:",
        "",
        "| iteration | seconds |",
        "|---|---|",
        f"| plain diffusion fine-tuning (student fwd+bwd, AdamW) | {seconds['plain']:.3f} |",
        f"| LADD ({ladd_work(cfg)}) | {seconds['ladd']:.3f} |",
        f"| **ratio** | **{seconds['ladd'] / seconds['plain']:.2f}x** |",
    ]


SECTIONS = ("quality", "speed", "cost")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(REPO_ROOT / "models" / "shapes-sd3"))
    parser.add_argument("--student", default=str(REPO_ROOT / "models" / "shapes-turbo"))
    parser.add_argument("--config", default=str(CONFIGS_DIR / "ladd-shapes.toml"))
    parser.add_argument("--data", default=str(RESULTS_DIR / "synth" / "shapes-sd3"))
    parser.add_argument("--out", default=str(RESULTS_DIR / "ladd-results"))
    parser.add_argument("--batch-size", type=int, default=64, help="training-cost batch (the LADD config's)")
    parser.add_argument("--speed-batch-sizes", default="32,64",
                        help="prompts per pipeline call, one speed table each (comma-separated)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--samples-per-prompt", type=int, default=1, help="images per held-out prompt (quality)")
    parser.add_argument("--speed-vae", help="the speed table also times both pipelines decoding with this VAE folder "
                                            "(e.g. models/shapes-slim-vae), and with the zoo VAE installed the same way")
    parser.add_argument("--sections", default="quality,speed,cost",
                        help="which sections to run, comma-separated (e.g. speed,cost for a student not trained yet: "
                             "neither depends on its weights)")
    parser.add_argument("--train-overrides", nargs="*", default=[],
                        help="--config overrides for the training-cost rows, e.g. distill.weight=0.2 "
                             "distill.guidance_scale=4.0 (the recipe the student was trained with)")
    args = parser.parse_args(argv)
    teacher, student = Path(args.teacher), Path(args.student)
    speed_vae = Path(args.speed_vae) if args.speed_vae else None
    sections = set(args.sections.split(","))
    if not sections <= set(SECTIONS):
        raise SystemExit(f"error: --sections takes {','.join(SECTIONS)}, not {args.sections}")
    print(f"# {platform.node()} · torch {torch.__version__} · {torch.get_num_threads()} threads\n")
    if "quality" in sections:
        per_prompt = f", {args.samples_per_prompt} images each" if args.samples_per_prompt > 1 else ""
        print(f"## Quality on the 256 held-out shapes prompts{per_prompt}\n")
        print("\n".join(quality(teacher, student, Path(args.out), args.samples_per_prompt)))
    if "speed" in sections:
        print("\n## Sampling speed\n")
        for batch_size in (int(b) for b in args.speed_batch_sizes.split(",")):
            print("\n".join(speed(teacher, student, batch_size, args.repeats, speed_vae)) + "\n")
    if "cost" in sections:
        print("\n## Training cost\n")
        print("\n".join(training_cost(Path(args.config), teacher, Path(args.data), args.batch_size, args.repeats,
                                       args.train_overrides, student)))


if __name__ == "__main__":
    main()
