"""`python -m bench.run`: generate a benchmark run (images, manifest, config) and score it.

With no arguments it benchmarks the embedded default (models/shapes-turbo if present, else models/shapes-sd3) on
the shapes suite and prints accuracy, CLIP score and Fréchet distance in CLIP space. Runs resume: rerunning a
command skips finished images. `accelerate launch -m bench.run ...` splits the batches over processes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.masks import POLICY_CHOICES
from bench.runfolder import CONFIG, MANIFEST, read_json, write_json
from bench.suites import SUITES
from ladd.cli import OneLineParser, run_cli

PROG = "python -m bench.run"


def _number(kind: type, minimum: float, description: str, maximum: float = float("inf")):
    """An argparse type: `kind(text)` within [minimum, maximum], else a one-line error naming what was expected."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, "a positive integer")
_non_negative_int = _number(int, 0, "a non-negative integer")
_non_negative_float = _number(float, 0.0, "a non-negative number")
_unit_float = _number(float, 1e-6, "a number in (0, 1]", maximum=1.0)


def _tag(text: str) -> tuple[str, object]:
    from ladd.config import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), parse_value(value.strip())


def build_parser() -> OneLineParser:
    suites = ", ".join(SUITES)
    parser = OneLineParser(
        prog=PROG,
        description="Generate and score a benchmark run. Without arguments: the embedded shapes model on the "
                    "shapes suite.",
        epilog="sd3-turbo is Stability's public SD3.5 Large Turbo; the LADD paper's own SD3-Turbo weights were "
               "never released. See docs/bench.md.",
    )
    parser.add_argument("--model", help="registry name (--list-models), local pipeline folder or LADD checkpoint "
                                        "folder (default: shapes-turbo if built, else shapes-sd3)")
    parser.add_argument("--suite", help=f"comma-separated suites: {suites} (default: shapes; custom with --prompts)")
    parser.add_argument("--samples-per-prompt", type=_positive_int, default=1, metavar="K")
    parser.add_argument("--steps", type=_positive_int, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=_non_negative_float, help="text guidance scale (default: the model's)")
    parser.add_argument("--image-guidance", type=_non_negative_float, metavar="S",
                        help="editing suites, instruction editors: the image guidance scale (default: the model's); "
                             "recorded as tag image_guidance")
    parser.add_argument("--strength", type=_unit_float, metavar="S",
                        help="editing suites, text-to-image models editing by SDEdit: how much of the source is "
                             "noised, 0-1 (default: the pipeline's); recorded as tag strength")
    parser.add_argument("--lora", metavar="DIR", help="merge this LoRA (diffusers' format, e.g. ladd.dpo's OUT/lora) "
                                                      "into the model first; recorded as tags lora, lora_scale")
    parser.add_argument("--lora-scale", type=_non_negative_float, default=1.0, metavar="S",
                        help="the LoRA's scale (default 1)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="base seed of every image seed (default 0)")
    parser.add_argument("--batch-size", type=_positive_int, help="images per pipeline call (default: the model's)")
    parser.add_argument("--out", help="run folder (default: results/<model>-<suites>[-<overrides>])")
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N prompts of each suite")
    parser.add_argument("--prompts", metavar="FILE", help="custom suite: text file (one prompt a line) or CSV with "
                                                           "a 'prompt' column")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="dataset folder for pie-bench / coco-inpaint (default: data/)")
    parser.add_argument("--mask-policy", choices=POLICY_CHOICES, default="mixed",
                        help="inpainting masks (default: mixed, one policy per image and seed)")
    parser.add_argument("--clip", metavar="PATH", help="CLIP for CLIP metrics: Hugging Face CLIP folder or open_clip "
                                                        "ViT-g-14 weights file (default: ViT-g-14 laion2b_s34b_b88k "
                                                        "from the HF cache; shapes suite: models/shapes-clip)")
    parser.add_argument("--vae", metavar="DIR", help="decode with this VAE folder instead of the model's own, e.g. "
                                                     "the slim models/shapes-slim-vae (or madebyollin/taesd3 for SD3, "
                                                     "downloaded); it must share the model's latent space")
    parser.add_argument("--no-score", action="store_true", help="generate only; score later with bench.score")
    parser.add_argument("--tag", type=_tag, action="append", default=[], metavar="KEY=VALUE",
                        help="free-form tag recorded in config.json (repeatable), e.g. --tag student_depth=4")
    parser.add_argument("--list-models", action="store_true", help="list registry models and exit")
    return parser


def resolve_suites(args) -> list[str]:
    from bench.suites import parse_suites

    if args.suite is None:
        return ["custom"] if args.prompts else ["shapes"]
    suites = parse_suites(args.suite)
    if args.prompts and "custom" not in suites:
        suites.append("custom")
    return suites


def folder_fingerprint(folder: str | Path) -> str:
    """A cheap content fingerprint of a model folder: names, sizes and the first/last MiB of every file.

    Stops a rerun into an old run folder from mixing images of a retrained model with the old ones.
    """
    digest = hashlib.sha256()
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder)}\0{size}\0".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def run_identity(spec, args, batch_size: int) -> dict:
    """The settings that decide every image; a run folder only resumes under the same identity."""
    return {
        "model_source": spec.source,
        "model_fingerprint": folder_fingerprint(spec.source) if spec.kind in ("folder", "checkpoint") else None,
        "defaults": spec.defaults,
        "steps": args.steps,
        "guidance": args.guidance,
        "image_guidance": args.image_guidance,
        "strength": args.strength,
        "seed": args.seed,
        "batch_size": batch_size,  # a stochastic sampler's renoise noise is drawn per batch
        "mask_policy": args.mask_policy,
        "vae": str(Path(args.vae).resolve()) if args.vae else None,
        "vae_fingerprint": folder_fingerprint(args.vae) if args.vae else None,
        "lora": str(Path(args.lora).resolve()) if args.lora else None,
        "lora_fingerprint": folder_fingerprint(args.lora) if args.lora else None,
        "lora_scale": args.lora_scale if args.lora else None,
    }


def check_resumable(out: Path, identity: dict) -> None:
    previous = read_json(out / CONFIG).get("identity")
    if previous is None:
        return
    changed = [key for key in identity if previous.get(key) != identity[key]]
    if changed:
        raise BenchError(f"{out} holds a run made with different settings ({', '.join(changed)} differ); pass "
                         f"a new --out, or the original settings to resume it")


def default_out(spec, suites: list[str], args) -> Path:
    from ladd.paths import RESULTS_DIR

    from bench.registry import SHAPES_MODELS

    label = spec.name if spec.kind in ("hub", "classical") or spec.name in SHAPES_MODELS else Path(spec.source).name
    parts = [label, "+".join(suites)]
    if args.steps is not None:
        parts.append(f"{args.steps}step")
    if args.guidance is not None:
        parts.append(f"g{args.guidance:g}")
    if args.image_guidance is not None:
        parts.append(f"ig{args.image_guidance:g}")
    if args.strength is not None:
        parts.append(f"s{args.strength:g}")
    if args.seed:
        parts.append(f"seed{args.seed}")
    if args.vae:
        parts.append(f"vae-{Path(args.vae).resolve().name}")
    if args.lora:
        from bench.runfolder import lora_label

        parts.append(f"lora-{lora_label(Path(args.lora).resolve())}"
                     + (f"x{args.lora_scale:g}" if args.lora_scale != 1.0 else ""))
    return RESULTS_DIR / "-".join(parts)


def option_tags(args) -> dict:
    """Values the report's figures read: image guidance and SDEdit strength (Fig. 13), a merged LoRA (Fig. 8)."""
    tags = {"image_guidance": args.image_guidance, "strength": args.strength}
    if args.lora:
        tags.update(lora=str(Path(args.lora).resolve()), lora_scale=args.lora_scale)
    return {k: v for k, v in tags.items() if v is not None}


def process_state():
    """accelerate's view of this process (rank, world size, device); a plain `python -m` run is one process.

    Without CUDA we ask for the CPU explicitly: `accelerate launch --multi_gpu --num_processes N` (torchrun) then
    gives N gloo processes on a CPU-only machine instead of N processes that each believe they are alone.
    """
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:  # every process would make every image
        raise BenchError(f"launched as {launched} processes but accelerate sees {state.num_processes}; use "
                         f"`accelerate launch --num_processes N -m bench.run ...`")
    return state


def count_existing(plan, out: Path) -> int:
    return sum((out / path).is_file() for path in plan["path"])


def environment() -> dict:
    import diffusers
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bench.registry import default_model, list_models, resolve_model

    if args.list_models:
        print(list_models())
        return 0

    # Everything that can fail on user input is checked before the run folder is touched.
    from bench.suites import load_suite

    suites = resolve_suites(args)
    frames = [load_suite(s, prompts_file=args.prompts, data_dir=args.data_dir, limit=args.limit) for s in suites]
    from bench.score import check_scoring  # after the prompt files: it imports diffusers, seconds a bad file waits

    spec = resolve_model(args.model or default_model())
    from bench.registry import check_available

    check_available(spec)
    if args.vae:  # checked from its config before any work; swapped in once the model is loaded
        from ladd.pipelines import vae_class

        try:
            vae_class(args.vae)
        except ValueError as error:
            raise BenchError(f"--vae: {error}") from None
    if args.lora:
        from ladd.pipelines import check_lora_folder

        try:
            check_lora_folder(args.lora)
        except ValueError as error:
            raise BenchError(f"--lora: {error}") from None
    if not args.no_score:
        check_scoring(suites, args.clip)
    batch_size = args.batch_size or spec.batch_size
    out = Path(args.out) if args.out else default_out(spec, suites, args)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} exists and is not a folder")
    identity = run_identity(spec, args, batch_size)
    check_resumable(out, identity)

    state = process_state()
    if state.is_main_process:
        from bench.runfolder import check_not_locked

        check_not_locked(out)  # refused at once, not after loading the model, while another process writes `out`
    return make_run(args, argv, spec, suites, frames, out, batch_size, identity, state)


def make_run(args, argv, spec, suites, frames, out: Path, batch_size: int, identity: dict, state) -> int:
    """Load the model, plan the run, and under the folder's lock generate this process's share, then merge and
    score on the main process."""
    from bench.generate import (default_size, effective_guidance, effective_steps, generate, make_batches,
                                plan_images, prepare_tasks, recovered_rows, resolve_call_kwargs, shard_batches)
    from bench.registry import checkpoint_info, checkpoint_tags, load_model
    from bench.runfolder import Journal, lock_run_folder, merge_manifest, remove_damaged, remove_temporaries

    pipe = load_model(spec, state.device)
    if args.vae:
        from ladd.pipelines import swap_vae

        try:
            swap_vae(pipe, args.vae)
        except ValueError as error:
            raise BenchError(str(error)) from None
    if args.lora:
        from ladd.pipelines import fuse_lora

        try:
            fuse_lora(pipe, args.lora, args.lora_scale)
        except ValueError as error:
            raise BenchError(f"--lora: {error}") from None
    from ladd.sampling import read_student_timesteps

    timesteps = read_student_timesteps(spec.source) if spec.kind in ("folder", "checkpoint") else None
    call_kwargs = resolve_call_kwargs(pipe, spec.defaults, args.steps, args.guidance, timesteps)
    steps, guidance = effective_steps(pipe, call_kwargs), effective_guidance(pipe, call_kwargs)
    size = default_size(pipe, call_kwargs)
    plan = plan_images(frames, samples_per_prompt=args.samples_per_prompt, seed=args.seed, size=size,
                       model=spec.name, steps=steps, guidance=guidance, mask_policy=args.mask_policy)
    batches = make_batches(plan, batch_size)
    options = {"strength": args.strength, "image_guidance_scale": args.image_guidance}
    prepared = prepare_tasks(pipe, list(dict.fromkeys(plan["task"])), options)  # a task the model cannot run: 2

    # One writer per run folder: the main process holds the lock until it is done (the OS frees it if the process
    # dies); the other processes of an accelerate launch are its shards and write only after its barrier. Taken
    # after the model loads, so a bad --vae still leaves no folder behind.
    with lock_run_folder(out, PROG) if state.is_main_process else contextlib.nullcontext():
        if state.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            remove_temporaries(out)  # before any process starts writing
            # A PNG truncated or overwritten since it was recorded is deleted here, so it is made again below.
            damaged = remove_damaged(out, plan["path"])
            if damaged:
                print(f"{out}: {len(damaged)} damaged image(s) will be made again, first {damaged[0][0]} "
                      f"({damaged[0][1]})", file=sys.stderr)
            existing_before = count_existing(plan, out)  # nobody writes before the barrier below
            previous = read_json(out / CONFIG)
            write_json(out / CONFIG, {
                "model": spec.name,
                "model_kind": spec.kind,
                "model_source": spec.source,
                "suite": list(dict.fromkeys(previous.get("suite", []) + suites)),
                "samples_per_prompt": args.samples_per_prompt,
                "steps": steps,
                "guidance": guidance,
                "seed": args.seed,
                "batch_size": batch_size,
                "limit": args.limit,
                "prompts": str(Path(args.prompts).resolve()) if args.prompts else None,
                "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None,
                "mask_policy": args.mask_policy,
                "clip": args.clip,
                "default_size": list(size),
                "call_kwargs": call_kwargs,
                "pipeline": type(pipe).__name__,
                "vae": {"class": type(getattr(pipe, "vae", None)).__name__,
                        "source": str(Path(args.vae).resolve()) if args.vae else None},
                "scheduler": {"class": type(getattr(pipe, "scheduler", None)).__name__,
                              **dict(getattr(getattr(pipe, "scheduler", None), "config", {}) or {})},
                "tags": {**previous.get("tags", {}), **checkpoint_tags(spec), **option_tags(args), **dict(args.tag)},
                "checkpoint": checkpoint_info(spec) or None,
                "identity": identity,
                "num_processes": state.num_processes,
                "environment": environment(),
                "command": [PROG, *(sys.argv[1:] if argv is None else argv)],
            })
        state.wait_for_everyone()

        mine = shard_batches(batches, state.process_index, state.num_processes)
        journal = Journal(out, state.process_index)
        generate(pipe, mine, out, call_kwargs, journal, args.mask_policy, progress=state.is_main_process,
                 prepared=prepared)
        state.wait_for_everyone()
        if not state.is_main_process:
            return 0

        manifest = merge_manifest(out, recovered_rows(plan, out))
        new = count_existing(plan, out) - existing_before
        print(f"{out}: {len(manifest)} images in {MANIFEST} ({new} new, {state.num_processes} process(es))")
        if args.no_score:
            return 0
        import torch

        from bench.score import Scorers, format_scores, score_run

        device = "cuda" if torch.cuda.is_available() else "cpu"
        scores = score_run(out, Scorers(clip=args.clip, device=device), suites)
        print()
        print(format_scores(scores, suites))
        return 0


if __name__ == "__main__":
    run_cli(main, PROG)
