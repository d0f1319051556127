"""How much wall time does bench.run's generation phase add over calling the pipeline directly?

Both sides make the same images (same prompts, sizes, per-image generators and batches) from the same loaded
pipeline, in one process, with repetitions interleaved (direct, bench, bench, direct, ...) so that drift in machine
load hits both alike:

- direct: `pipe(prompt=[...], generator=[...], width=W, height=H, output_type="pil", **defaults)` per batch;
- bench:  `bench.generate.generate(...)` over the same batches into an empty run folder (PNG writes via temporary
  file + os.replace, the manifest journal, the progress bar), then `merge_manifest` (manifest.parquet).

    python scripts/bench_overhead.py                      # shapes-turbo if built, else a tiny random SD3 pipeline
    python scripts/bench_overhead.py --model models/shapes-sd3 --limit 64 --repeats 5

The result is recorded in docs/bench.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def direct_generation(pipe, batches, call_kwargs) -> None:
    for batch in batches:
        width, height = int(batch["width"].iloc[0]), int(batch["height"].iloc[0])
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in batch["seed"]]
        pipe(**dict(call_kwargs, prompt=list(batch["prompt"]), generator=generators, width=width, height=height,
                    output_type="pil"))


def bench_generation(pipe, batches, call_kwargs, run_dir: Path) -> None:
    from bench.generate import generate
    from bench.runfolder import Journal, merge_manifest

    generate(pipe, batches, run_dir, call_kwargs, Journal(run_dir), progress=True)
    merge_manifest(run_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="registry name or folder (default: shapes-turbo if built, else a tiny "
                                        "random SD3 pipeline)")
    parser.add_argument("--suite", default="shapes")
    parser.add_argument("--limit", type=int, default=None, help="prompts per repetition (default: the whole suite)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each side (default 5)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from bench.generate import default_size, make_batches, plan_images, quiet_library_warnings, resolve_call_kwargs
    from bench.registry import DEFAULT_MODELS, ModelSpec, load_model, resolve_model
    from bench.suites import load_suite
    from ladd.paths import MODELS_DIR

    scratch = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    model = args.model or next((m for m in DEFAULT_MODELS if (MODELS_DIR / m / "model_index.json").is_file()), None)
    if model is None:
        from ladd.sampling import read_sampling_defaults
        from ladd.shapes.zoo import random_pipeline

        random_pipeline(scratch / "tiny-sd3")
        spec = ModelSpec("tiny-random-sd3", "folder", str(scratch / "tiny-sd3"),
                         read_sampling_defaults(scratch / "tiny-sd3"))
    else:
        spec = resolve_model(model)
    pipe = load_model(spec)
    quiet_library_warnings()
    call_kwargs = resolve_call_kwargs(pipe, spec.defaults, steps=args.steps)
    frame = load_suite(args.suite, limit=args.limit)
    plan = plan_images([frame], samples_per_prompt=1, seed=0, size=default_size(pipe, call_kwargs),
                       model=spec.name, steps=0, guidance=0.0)
    batches = make_batches(plan, args.batch_size)
    direct_generation(pipe, batches[:1], call_kwargs)  # warm-up: first-call allocations, lazy imports

    times = {"direct": [], "bench": []}
    for repeat in range(args.repeats):
        order = ("direct", "bench") if repeat % 2 == 0 else ("bench", "direct")
        for side in order:
            start = time.perf_counter()
            if side == "direct":
                direct_generation(pipe, batches, call_kwargs)
            else:
                bench_generation(pipe, batches, call_kwargs, scratch / f"run{repeat}")
            times[side].append(time.perf_counter() - start)

    direct, bench = sum(times["direct"]), sum(times["bench"])
    result = {
        "model": spec.name,
        "images_per_repeat": len(plan),
        "batch_size": args.batch_size,
        "sizes": sorted({f"{w}x{h}" for w, h in zip(plan["width"], plan["height"])}),
        "call_kwargs": call_kwargs,
        "threads": args.threads,
        "repeats": args.repeats,
        "direct_seconds": [round(t, 3) for t in times["direct"]],
        "bench_seconds": [round(t, 3) for t in times["bench"]],
        "median_direct": round(statistics.median(times["direct"]), 3),
        "median_bench": round(statistics.median(times["bench"]), 3),
        "overhead_percent": round(100 * (bench / direct - 1), 2),
        "overhead_ms_per_image": round(1000 * (bench - direct) / (args.repeats * len(plan)), 3),
        "direct_ms_per_image": round(1000 * direct / (args.repeats * len(plan)), 3),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    print(f"\ngeneration overhead of bench.run over direct pipeline calls: {result['overhead_percent']:+.2f}% "
          f"(sum over {args.repeats} interleaved repetitions of {len(plan)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
