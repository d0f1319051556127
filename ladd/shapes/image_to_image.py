"""The shapes world's image-to-image teachers, by continued training as the paper makes SD3-edit and SD3-inpainting
(Sec. 5.2): `python -m ladd.shapes.image_to_image {edit,inpaint} [--smoke] [key=value ...]`.

Both start from the text-to-image teacher (`models/shapes-sd3`) with its input channels grown by zero-initialised
weights (`ladd.conditioning.expand_input_channels`), so training starts from exactly the text-to-image model, and go
on with the same rectified-flow objective on data adjusted to the task:

  edit     rendered edit pairs (`ladd.shapes.edits`): the target is the image to make, the source latent is
           concatenated on the input channels, the instruction is the text. Text, image, or both are dropped
           (5% each, as InstructPix2Pix) so that nested guidance over image and text works.
  inpaint  rendered scenes with masks of `bench.masks`' policies: [mask, masked-image latent] on the input
           channels, the scene's prompt as text; the image condition is always present, only text is dropped.

Outputs `models/shapes-sd3-edit` (`StableDiffusion3EditPipeline`) and `models/shapes-sd3-inpaint`
(`StableDiffusion3ChannelInpaintPipeline`): ordinary diffusers folders, loaded with `ladd.pipelines.load_pipeline`.
A task model as `base` (e.g. `base="models/shapes-sd3-edit" seed=1`) continues training as it is: a teacher's
budget can be spent in sittings, each on fresh data when the seed changes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from bench.masks import make_mask
from ladd.checkpoint import swap_in
from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.config import load_dict_config
from ladd.conditioning import encode_images, expand_input_channels, inpaint_condition, to_model_range
from ladd.edit_pipeline import StableDiffusion3EditPipeline
from ladd.inpaint_pipeline import StableDiffusion3ChannelInpaintPipeline
from ladd.logs import MetricsLog
from ladd.losses import diffusion_loss
from ladd.paths import CONFIGS_DIR, MODELS_DIR, RESULTS_DIR
from ladd.pipelines import link_components, load_pipeline, pipeline_folder
from ladd.shapes.build import PromptTable
from ladd.shapes.data import BUCKET_SHARES, render_pool
from ladd.shapes.edits import EDIT_KINDS, sample_edit
from ladd.shapes.heldout import heldout_edit_keys, heldout_prompts
from ladd.shapes.optim import make_optimizer, training_step
from ladd.shapes.render import BUCKETS
from ladd.shapes.zoo import save_pipeline

PROG = "python -m ladd.shapes.image_to_image"
TASKS = {"edit": StableDiffusion3EditPipeline, "inpaint": StableDiffusion3ChannelInpaintPipeline}


def uint8_tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2).contiguous()


def edit_pool(num: int, seed: int, exclude: set[tuple[str, str]] = frozenset()) -> list[dict]:
    """Per aspect bucket: `num` rendered edits in all, balanced over the edit kinds, none whose (source prompt,
    instruction) is in `exclude` (the held-out edits)."""
    rng = np.random.default_rng(seed)
    buckets = []
    for (width, height), share in zip(BUCKETS, BUCKET_SHARES):
        sources, targets, instructions = [], [], []
        for i in tqdm(range(int(round(num * share))), desc=f"edits {width}x{height}"):
            while True:
                edit = sample_edit(rng, EDIT_KINDS[i % len(EDIT_KINDS)], width, height)
                if (edit.source_prompt, edit.instruction) not in exclude:
                    break
            source, target = edit.render()
            sources.append(source)
            targets.append(target)
            instructions.append(edit.instruction)
        buckets.append({"source": uint8_tensor(sources), "target": uint8_tensor(targets), "prompts": instructions})
    return buckets


@torch.no_grad()
def posterior(vae, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw posterior (mean, std) of uint8 images: training draws a fresh sample of each at every step, as the
    text-to-image teacher was trained."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        dist = vae.encode(to_model_range(images[start:start + batch_size])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


class EditData:
    """Batches of (target latents, instruction, source latents) from an edit pool, one bucket per batch."""

    def __init__(self, pipe, pool: list[dict], cfg: dict):
        vae = pipe.vae
        self.scale, self.shift = vae.config.scaling_factor, vae.config.shift_factor
        self.targets = [posterior(vae, b["target"]) for b in tqdm(pool, desc="encoding targets")]
        self.sources = [torch.cat([encode_images(vae, to_model_range(b["source"][i:i + 256]))
                                   for i in range(0, len(b["source"]), 256)]) for b in pool]
        self.prompts = [b["prompts"] for b in pool]
        self.table = PromptTable(pipe, [p for b in pool for p in b["prompts"]])
        self.cfg = cfg

    def batch(self, bucket: int, index: torch.Tensor, generator: torch.Generator):
        mean, std = (t[index] for t in self.targets[bucket])
        x0 = (mean + std * torch.randn(mean.shape, generator=generator) - self.shift) * self.scale
        prompts = [self.prompts[bucket][i] for i in index]
        draw = torch.rand(len(prompts), generator=generator)
        p = self.cfg["dropout"]  # InstructPix2Pix: text only, image only, both, each with probability p
        drop_text = (draw < p) | ((draw >= 2 * p) & (draw < 3 * p))
        drop_image = (draw >= p) & (draw < 3 * p)
        embeds, pooled = self.table(["" if d else text for text, d in zip(prompts, drop_text.tolist())])
        condition = self.sources[bucket][index] * (~drop_image).float()[:, None, None, None]
        return x0, embeds, pooled, condition


class InpaintData:
    """Batches of (scene latents, prompt, [mask, masked-image latent]) from a rendered pool; every sample gets a
    fresh mask of a random policy."""

    def __init__(self, pipe, pool, cfg: dict):
        self.vae, self.pool, self.cfg = pipe.vae, pool, cfg
        self.scale, self.shift = self.vae.config.scaling_factor, self.vae.config.shift_factor
        self.latents = [posterior(self.vae, b.images) for b in tqdm(pool, desc="encoding scenes")]
        self.table = PromptTable(pipe, [p for b in pool for p in b.prompts])
        self.draws = 0

    def batch(self, bucket: int, index: torch.Tensor, generator: torch.Generator):
        mean, std = (t[index] for t in self.latents[bucket])
        x0 = (mean + std * torch.randn(mean.shape, generator=generator) - self.shift) * self.scale
        prompts = [self.pool[bucket].prompts[i] for i in index]
        drop = torch.rand(len(prompts), generator=generator) < self.cfg["text_dropout"]
        embeds, pooled = self.table(["" if d else p for p, d in zip(prompts, drop.tolist())])
        width, height = self.pool[bucket].size
        masks = []
        for _ in index:  # training masks are named apart from the benchmark's ("train-N")
            masks.append(make_mask(f"train-{self.draws}", self.cfg["seed"], width, height, "mixed")[0])
            self.draws += 1
        masks = torch.from_numpy(np.stack(masks))[:, None].float()
        condition = inpaint_condition(self.vae, to_model_range(self.pool[bucket].images[index]), masks)
        return x0, embeds, pooled, condition


def continue_training(transformer, data, bucket_sizes: list[int], cfg: dict, log: MetricsLog, seed: int):
    """The text-to-image teacher's objective on the task's data (rectified flow at t ~ pi(t; m, s)), with EMA;
    returns the EMA weights' model."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    transformer.train()
    ema = EMAModel(transformer.parameters(), decay=cfg["ema_decay"], use_ema_warmup=True, power=0.75)
    optimizer, schedule = make_optimizer(transformer.parameters(), cfg, cfg["steps"])
    weights = torch.tensor(bucket_sizes, dtype=torch.float)
    started = time.time()
    for step in tqdm(range(cfg["steps"]), desc="training"):
        bucket = int(torch.multinomial(weights, 1, generator=generator))
        index = torch.randint(bucket_sizes[bucket], (cfg["batch_size"],), generator=generator)
        x0, embeds, pooled, condition = data.batch(bucket, index, generator)
        loss = diffusion_loss(transformer, x0, embeds, pooled, cfg["logit_mean"], cfg["logit_std"],
                              image_latents=condition, generator=generator)
        training_step(loss, transformer, optimizer, schedule, ema, cfg["max_grad_norm"], log, step, cfg["steps"] - 1,
                      started)
    ema.copy_to(transformer.parameters())
    return transformer.eval()


def build(task: str, cfg: dict, out_dir: Path, work_dir: Path) -> dict:
    started = time.time()
    base = load_pipeline(pipeline_folder(cfg["base"]))
    latent = base.vae.config.latent_channels
    wanted = 2 * latent + (1 if task == "inpaint" else 0)
    have = base.transformer.config.in_channels
    if have not in (latent, wanted):
        raise LaddError(f"base: {cfg['base']} takes {have} input channels; the {task} task needs a text-to-image "
                        f"model ({latent}) or a {task} model ({wanted}) to continue")
    # a text-to-image base grows zero-initialised condition channels; a task model continues as it is
    transformer = expand_input_channels(base.transformer, wanted - have) if have != wanted else base.transformer
    pipe = TASKS[task](**{**base.components, "transformer": transformer})
    if task == "edit":
        pool = edit_pool(cfg["num_pairs"], cfg["seed"], heldout_edit_keys())
        data, sizes = EditData(pipe, pool, cfg), [len(b["prompts"]) for b in pool]
    else:
        pool = render_pool(cfg["num_images"], cfg["seed"], exclude=heldout_prompts())
        data, sizes = InpaintData(pipe, pool, cfg), [len(b.prompts) for b in pool]
    prepared = (time.time() - started) / 60
    work_dir.mkdir(parents=True, exist_ok=True)
    pipe.transformer = continue_training(transformer, data, sizes, cfg, MetricsLog(work_dir / f"{cfg['name']}.csv"),
                                         cfg["seed"])
    defaults = {"num_inference_steps": cfg["sample_steps"], "guidance_scale": cfg["guidance_scale"],
                "height": 64, "width": 64}
    if task == "edit":
        defaults["image_guidance_scale"] = cfg["image_guidance_scale"]
    # written beside and swapped in: the folder may be the base itself, whose components link to another model's
    staging = out_dir / f"{cfg['name']}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    save_pipeline(pipe, staging, **defaults)
    # continued training changes only the transformer: every other component is the base's (a re-saved tokenizer
    # gains config keys, so comparing bytes would keep copies)
    untouched = [p.name for p in staging.iterdir() if p.is_dir() and p.name != "transformer"]
    link_components(staging, pipeline_folder(cfg["base"]), untouched, replaces=out_dir / cfg["name"])
    swap_in(staging, out_dir / cfg["name"])
    report = {"task": task, "config": cfg, "minutes": {"data": prepared, "training": (time.time() - started) / 60
                                                      - prepared}}
    (work_dir / f"{cfg['name']}-build.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--config", help="TOML (default: configs/image-to-image.toml, or -smoke.toml)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and few steps: seconds, for tests")
    parser.add_argument("--out", default=str(MODELS_DIR), help="where the model folder goes (default: models/)")
    parser.add_argument("--work", default=str(RESULTS_DIR / "image-to-image-build"), help="logs and build report")
    parser.add_argument("overrides", nargs="*", help="overrides of the task's section, e.g. steps=100 base=DIR")
    args = parser.parse_intermixed_args(argv)
    path = args.config or CONFIGS_DIR / ("image-to-image-smoke.toml" if args.smoke else "image-to-image.toml")
    cfg = load_dict_config(path, [f"{args.task}.{o}" for o in args.overrides])[args.task]
    try:
        pipeline_folder(cfg["base"])
    except ValueError as error:
        raise LaddError(f"base: {error} (build the text-to-image teacher first: python -m ladd.shapes.build)"
                        ) from None
    report = build(args.task, cfg, Path(args.out), Path(args.work))
    print(json.dumps(report["minutes"], indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
