"""The generation phase of `bench.run`: plan every image, split the plan into batches, make what is missing.

Reproducibility:
- every image has its own seed, fixed by (--seed, suite, prompt id, sample index) (`bench.seeding.sample_seed`),
  and its own CPU `torch.Generator`, so any two models see the same initial noise for it, on any device, at any
  batch size and under any sharding;
- diffusers' stochastic consistency scheduler (`FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)`, the
  LADD student's sampler) draws its renoise noise from the *global* torch RNG, which the pipeline does not let us
  route to the per-image generators. We reseed the global RNG before every batch from that batch's image seeds,
  so a stochastic sampler's images are fixed by the plan and the batch size (batches are cut from the full plan,
  never from what is left to do, so a resumed or sharded run reproduces an uninterrupted one).

Resuming: an image whose PNG exists is finished (writes are atomic). A batch with every image finished is
skipped; a batch cut short by a kill is run again whole (same noise) and only its missing images are written.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from bench.errors import BenchError
from bench.masks import make_mask, mask_image, mask_policy_for
from bench.runfolder import MASKS_DIR, SOURCES_DIR, BatchWriter, Journal, image_path, save_image
from bench.seeding import sample_seed, stable_seed
from bench.suites import EDITING, INPAINTING, SUITES, TEXT_TO_IMAGE


# ---------------------------------------------------------------------------------------------------------------
# Call arguments


def call_parameters(pipe) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def resolve_call_kwargs(pipe, defaults: dict, steps: int | None = None, guidance: float | None = None,
                        timesteps=None) -> dict:
    """The pipeline call arguments: the model's defaults, overridden by --steps / --guidance.

    --steps on a stochastic (consistency) scheduler — a LADD student — samples at the student's own timesteps for
    that many steps (`ladd.timesteps.StudentTimesteps.sigmas`, e.g. [1, .5] for 2 of [1, .75, .5, .25]), not at a
    respaced schedule. `timesteps` are the student's (its folder's sigma table); without them, the timesteps its
    defaults pin, else the paper's. On any other scheduler, pinned sigmas are dropped and the scheduler spaces
    `num_inference_steps`.
    """
    kwargs = dict(defaults)
    if guidance is not None:
        kwargs["guidance_scale"] = float(guidance)
    if steps is not None:
        if getattr(getattr(pipe, "scheduler", None), "config", {}).get("stochastic_sampling"):
            from ladd.sampling import consistency_scheduler
            from ladd.timesteps import StudentTimesteps

            try:
                if timesteps is None:
                    pinned = defaults.get("sigmas")
                    timesteps = StudentTimesteps.for_sampling(pinned) if pinned else StudentTimesteps()
                kwargs["sigmas"] = timesteps.sigmas(int(steps))
            except ValueError as error:
                raise BenchError(f"--steps {steps}: {error}") from None
            # A student exported before explicit sigmas were kept as given would re-stretch them (shift_terminal).
            pipe.scheduler = consistency_scheduler(pipe.scheduler.config)
        else:
            kwargs.pop("sigmas", None)
        kwargs["num_inference_steps"] = int(steps)
    accepted = call_parameters(pipe)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in kwargs if k not in accepted and not takes_any]
    if unknown:
        raise BenchError(f"{type(pipe).__name__} does not accept sampling default(s) {', '.join(unknown)}")
    return kwargs


def effective_steps(pipe, kwargs: dict) -> int:
    if kwargs.get("sigmas") is not None:
        return len(kwargs["sigmas"])
    if "num_inference_steps" in kwargs:
        return int(kwargs["num_inference_steps"])
    return int(call_parameters(pipe)["num_inference_steps"].default)


def effective_guidance(pipe, kwargs: dict) -> float:
    if "guidance_scale" in kwargs:
        return float(kwargs["guidance_scale"])
    parameter = call_parameters(pipe).get("guidance_scale")
    return float(parameter.default) if parameter is not None and parameter.default is not None else float("nan")


def default_size(pipe, kwargs: dict) -> tuple[int, int]:
    """(width, height) the pipeline generates at when a suite does not fix a size."""
    if "width" in kwargs and "height" in kwargs:
        return int(kwargs["width"]), int(kwargs["height"])
    scale = getattr(pipe, "vae_scale_factor", 8)
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if sample is None:
        raise BenchError(f"cannot tell {type(pipe).__name__}'s default image size; set width and height in the "
                         f"model's sampling_defaults.json")
    side = int(sample) * int(scale)
    return int(kwargs.get("width", side)), int(kwargs.get("height", side))


# ---------------------------------------------------------------------------------------------------------------
# The plan: one row per image


def plan_images(suites: list[pd.DataFrame], *, samples_per_prompt: int, seed: int, size: tuple[int, int],
                model: str, steps: int, guidance: float, mask_policy: str = "mixed") -> pd.DataFrame:
    """Every image of the run, in a fixed order, with its seed, size and paths (relative to the run folder)."""
    rows = []
    for frame in suites:
        for record in frame.to_dict("records"):
            suite, prompt_id = record["suite"], str(record["prompt_id"])
            task = SUITES[suite].task
            width, height = int(record["width"]) or size[0], int(record["height"]) or size[1]
            for k in range(samples_per_prompt):
                image_seed = sample_seed(seed, suite, prompt_id, k)
                row = {**record, "prompt_id": prompt_id, "sample_index": k, "seed": image_seed, "model": model,
                       "steps": steps, "guidance": guidance, "width": width, "height": height,
                       "path": image_path(suite, prompt_id, k), "task": task}
                if task != TEXT_TO_IMAGE:
                    row["source_file"] = row.pop("source_path")
                    row["source_path"] = f"{SOURCES_DIR}/{suite}/{prompt_id}_{width}x{height}.png"
                if task == INPAINTING:  # a suite may fix each row's policy (shapes-inpaint), else --mask-policy
                    row["mask_request"] = record.get("mask_policy") or mask_policy
                    row["mask_policy"] = mask_policy_for(prompt_id, image_seed, row["mask_request"])
                    row["mask_path"] = f"{MASKS_DIR}/{suite}/{prompt_id}_{k}.png"
                    row["target_prompt"] = record["prompt"]
                rows.append(row)
    return pd.DataFrame(rows)


def make_batches(plan: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Consecutive chunks of the plan, one task and image size per batch, in plan order."""
    batches = []
    groups = plan.groupby(["task", "width", "height"], sort=False)
    for _, group in groups:
        batches += [group.iloc[start : start + batch_size] for start in range(0, len(group), batch_size)]
    return batches


def shard_batches(batches: list[pd.DataFrame], rank: int, world: int) -> list[pd.DataFrame]:
    """Round-robin by batch, so every process gets whole batches and similar amounts of each size."""
    return batches[rank::world]


def missing_mask(batch: pd.DataFrame, run_dir: Path) -> np.ndarray:
    return np.array([not (run_dir / p).is_file() for p in batch["path"]], dtype=bool)


# ---------------------------------------------------------------------------------------------------------------
# Sources and masks for editing / inpainting


def prepare_source(row: dict, run_dir: Path) -> Image.Image:
    """The input image, centre-cropped and resized to the generation size, kept in the run folder."""
    path = run_dir / row["source_path"]
    try:
        with Image.open(path) as kept:
            return kept.convert("RGB")
    except FileNotFoundError:
        pass
    except (OSError, SyntaxError, ValueError):
        pass  # damaged since it was written: made again from the original below
    with Image.open(row["source_file"]) as original:
        image = ImageOps.fit(original.convert("RGB"), (int(row["width"]), int(row["height"])), Image.LANCZOS)
    save_image(image, path)
    return image


def prepare_mask(row: dict, run_dir: Path, policy: str) -> Image.Image:
    mask, drawn = make_mask(str(row["prompt_id"]), int(row["seed"]), int(row["width"]), int(row["height"]),
                            row.get("mask_request") or policy)
    assert drawn == row["mask_policy"], "mask policy changed between planning and drawing"
    image = mask_image(mask)
    save_image(image, run_dir / row["mask_path"])
    return image


def task_pipeline(pipe, task: str):
    """The pipeline for a task: an inpainting / image-to-image variant of a text-to-image model when needed. A model
    that cannot run the task is a BenchError, before any image is made."""
    accepted = call_parameters(pipe)
    if task == TEXT_TO_IMAGE:
        if "mask_image" in accepted or "image" in accepted:
            raise BenchError(f"{type(pipe).__name__} needs an input image: it cannot make images from text alone")
        return pipe
    if task == INPAINTING and "mask_image" not in accepted:
        from diffusers import AutoPipelineForInpainting

        try:
            pipe = AutoPipelineForInpainting.from_pipe(pipe)
        except (ValueError, KeyError) as error:
            raise BenchError(f"{type(pipe).__name__} has no inpainting variant ({error})") from None
        pipe.set_progress_bar_config(disable=True)  # bench.run shows one bar over all images
        channels = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "in_channels", None)
        if type(pipe).__name__ == "StableDiffusion3InpaintPipeline" and channels not in (16, 33):
            raise BenchError(f"diffusers' StableDiffusion3InpaintPipeline takes 16- or 33-channel transformers, this "
                             f"model's has {channels}: it cannot inpaint (an inpainting model, e.g. shapes-sd3-inpaint, "
                             f"can)")
        return pipe
    if task == EDITING and "image" not in accepted:
        from diffusers import AutoPipelineForImage2Image

        try:
            pipe = AutoPipelineForImage2Image.from_pipe(pipe)
        except (ValueError, KeyError) as error:
            raise BenchError(f"{type(pipe).__name__} has no image-to-image variant ({error})") from None
        pipe.set_progress_bar_config(disable=True)
        return pipe
    if task == EDITING and "mask_image" in accepted:
        raise BenchError(f"{type(pipe).__name__} inpaints; it does not edit")
    return pipe


def task_kwargs(pipe, task: str, options: dict) -> dict:
    """The call arguments of a task's options (`--strength`, `--image-guidance`) for its pipeline; one the
    pipeline does not take is a BenchError."""
    accepted = call_parameters(pipe)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in accepted]
    if unknown and task != TEXT_TO_IMAGE:
        flags = {"strength": "--strength", "image_guidance_scale": "--image-guidance"}
        raise BenchError(f"{type(pipe).__name__} ({task}) takes no {', '.join(flags.get(k, k) for k in unknown)}")
    return {} if task == TEXT_TO_IMAGE else given


def uses_instructions(pipe) -> bool:
    """Instruction editors (InstructPix2Pix, `ladd.edit_pipeline`) are guided over the image too, and read the
    edit's instruction; other image-to-image pipelines (SDEdit) read the target caption."""
    return "image_guidance_scale" in call_parameters(pipe)


# ---------------------------------------------------------------------------------------------------------------
# Running


def seed_global_rng(seed: int) -> None:
    """Seed the global RNGs a stochastic scheduler draws from: CPU, and CUDA once it is in use.

    Not `torch.manual_seed`: with CUDA uninitialised it queues a lazy seeding call and formats a stack trace for
    it on every batch (about 1 ms, measurable against a few-step model).
    """
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def run_batch(pipe, rows: list[dict], call_kwargs: dict, run_dir: Path, mask_policy: str,
              extra: dict | None = None) -> list[Image.Image]:
    """One pipeline call for one batch (plan rows of one task and size); returns its images in batch order."""
    task, width, height = rows[0]["task"], int(rows[0]["width"]), int(rows[0]["height"])
    seeds = [int(r["seed"]) for r in rows]
    kwargs = dict(call_kwargs, prompt=[r["prompt"] for r in rows], width=width, height=height, output_type="pil",
                  # CPU generators: the same initial noise on every device
                  generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
    if task == INPAINTING:
        kwargs.update(image=[prepare_source(r, run_dir) for r in rows],
                      mask_image=[prepare_mask(r, run_dir, mask_policy) for r in rows])
        if "strength" in call_parameters(pipe):
            kwargs["strength"] = 1.0  # an SDEdit-style pipeline: the masked region starts from pure noise
    elif task == EDITING:
        kwargs["image"] = [prepare_source(r, run_dir) for r in rows]
        if uses_instructions(pipe) and all(r.get("instruction") for r in rows):
            kwargs["prompt"] = [r["instruction"] for r in rows]
    kwargs.update(extra or {})
    # Stochastic schedulers draw renoise noise from the global RNG (see the module docstring).
    seed_global_rng(stable_seed("renoise", *seeds))
    images = pipe(**kwargs).images
    if len(images) != len(rows):
        raise RuntimeError(f"{type(pipe).__name__} returned {len(images)} images for a batch of {len(rows)}")
    return images


MANIFEST_FIELDS_DROPPED = ("task", "source_file", "mask_request")


def manifest_row(row: dict, image: Image.Image, seconds: float, process_index: int) -> dict:
    record = {k: v for k, v in row.items() if k not in MANIFEST_FIELDS_DROPPED}
    record["width"], record["height"] = image.size  # what was actually made
    record["seconds_per_batch"] = seconds
    record["process_index"] = process_index
    return record


def quiet_library_warnings() -> None:
    """diffusers/transformers warn once per batch when a prompt exceeds the text encoder's length (DrawBench and
    Parti have such prompts; they are truncated, as in every CLIP-conditioned model). One line per batch would
    bury the progress bar, so generation logs errors only; docs/bench.md states the truncation."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def prepare_tasks(pipe, tasks, options: dict | None = None) -> dict[str, tuple]:
    """{task: (its pipeline, its option arguments)} for every task a run has, checked before any image is made."""
    prepared = {}
    for task in tasks:
        task_pipe = task_pipeline(pipe, task)
        prepared[task] = (task_pipe, task_kwargs(task_pipe, task, options or {}))
    return prepared


def generate(pipe, batches: list[pd.DataFrame], run_dir: str | Path, call_kwargs: dict, journal: Journal,
             mask_policy: str = "mixed", progress: bool = True, prepared: dict | None = None) -> int:
    """Make every missing image of `batches` (with `prepare_tasks`' pipelines, when given); returns how many were
    written."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    quiet_library_warnings()
    todo = [(batch, missing_mask(batch, run_dir)) for batch in batches]
    todo = [(batch, missing) for batch, missing in todo if missing.any()]
    pipelines = dict(prepared or {})
    written = 0
    bar = tqdm(total=int(sum(m.sum() for _, m in todo)), unit="img", disable=not progress, desc="generating")
    writer = BatchWriter(journal)
    try:
        for batch, missing in todo:
            records = batch.to_dict("records")
            task = records[0]["task"]
            if task not in pipelines:
                pipelines[task] = (task_pipeline(pipe, task), {})
            task_pipe, extra = pipelines[task]
            start = time.perf_counter()
            images = run_batch(task_pipe, records, call_kwargs, run_dir, mask_policy, extra)
            seconds = time.perf_counter() - start
            rows = [row for row, needed in zip(records, missing) if needed]
            kept = [image for image, needed in zip(images, missing) if needed]
            writer.submit([(image, run_dir / row["path"]) for row, image in zip(rows, kept)],
                          [manifest_row(row, image, seconds, journal.rank) for row, image in zip(rows, kept)])
            written += len(rows)
            bar.update(len(rows))
    finally:
        writer.close()  # finished batches reach the disk even when a later batch fails
        bar.close()
    return written


def recovered_rows(plan: pd.DataFrame, run_dir: str | Path) -> pd.DataFrame:
    """Manifest rows rebuilt from the plan for images on disk (used only where no journal row survived a kill;
    their `seconds_per_batch` is unknown)."""
    run_dir = Path(run_dir)
    done = plan[[(run_dir / p).is_file() for p in plan["path"]]]
    frame = done.drop(columns=[c for c in MANIFEST_FIELDS_DROPPED if c in done.columns]).copy()
    frame["seconds_per_batch"] = float("nan")
    frame["process_index"] = -1  # unknown: the row is rebuilt, not journalled
    return frame
