"""Build the shapes-world model zoo: `python -m ladd.shapes.build [--smoke] [--config FILE] [key=value ...]`.

Stages, each trained by this file on rendered shapes scenes (never on a held-out prompt):
  1. tokenizer  CLIPTokenizer whose BPE merges make every grammar word one token
  2. clip       a tiny CLIPModel, trained contrastively; its text tower becomes the pipeline's text encoders
  3. scene_encoder  a tiny T5EncoderModel (the pipeline's T5 slot), trained to write each object group's
                attributes and place into its words (`ladd.shapes.scene_encoder`)
  4. vae        a tiny AutoencoderKL (4x downsampling); scaling/shift factors measured from its latents
  5. tiny_vae   (optional, not in the default stages) a small VAE for the VAE's latents, a slimmer AutoencoderKL or
                a TAESD-style AutoencoderTiny: a several times cheaper decoder (and encoder), trained to decode and
                encode like the VAE
  6. teacher    an SD3Transformer2DModel trained with the rectified-flow objective (logit-normal t as in SD3,
                text dropout so classifier-free guidance works) on all three aspect buckets, with EMA
Outputs: `<out>/shapes-clip/` (CLIPModel + CLIPProcessor), `<out>/<tiny_vae.name>/` (the small VAE) and
`<out>/<teacher.name>/` (StableDiffusion3Pipeline).
`stages=["teacher"]` reuses an existing CLIP, and the VAE and scene encoder of the pipeline `reuse_from` (e.g.
teachers of other depths for the scaling study); `stages=["tiny_vae"]` fits a tiny VAE to that pipeline's VAE.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny, SD3Transformer2DModel
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer, T5EncoderModel

from ladd.conditioning import encode_prompts, to_model_range
from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.config import load_dict_config
from ladd.data import LatentBuckets, shard_paths
from ladd.logs import MetricsLog
from ladd.losses import diffusion_loss
from ladd.paths import CONFIGS_DIR, MODELS_DIR, RESULTS_DIR
from ladd.pipelines import latent_downsampling
from ladd.shapes.data import BucketSampler, render_pool
from ladd.shapes.grammar import one_attribute_changes, parse_prompt, scene_to_prompt
from ladd.shapes.heldout import heldout_prompts
from ladd.shapes.optim import make_optimizer, training_step
from ladd.shapes.scene_encoder import train_scene_encoder
from ladd.shapes.zoo import (
    assemble_pipeline,
    build_tokenizer,
    clip_config,
    clip_image_processor,
    make_tiny_vae,
    make_transformer,
    make_vae,
    max_sequence_length,
    save_pipeline,
    teacher_scheduler,
    text_encoder_from_clip,
    tiny_vae_config_error,
)

PROG = "python -m ladd.shapes.build"


def clip_pixels(processor, images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> CLIP pixel values, through the saved processor (so training matches inference)."""
    return processor(images=list(images.permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]


def hard_negative(prompt: str, rng: np.random.Generator) -> str:
    """The prompt with one attribute changed (colour, shape, count, size, relation or background)."""
    changes = one_attribute_changes(parse_prompt(prompt))
    return scene_to_prompt(changes[rng.integers(len(changes))])


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE where each image also competes against the hard negatives of every caption:
    logits_per_image is B x 2B (true captions, then their hard negatives)."""
    n = len(logits_per_image)
    labels = torch.arange(n)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image[:, :n].T, labels)) / 2


def train_clip(pool, tokenizer: CLIPTokenizer, cfg: dict, log: MetricsLog, seed: int) -> CLIPModel:
    """Contrastive training with one hard negative per caption: in-batch negatives alone let CLIP get by on colour
    (a red circle and a red square ended up with near-identical text embeddings), and its text tower is what the
    teacher reads prompts with."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CLIPModel(clip_config(tokenizer, cfg))
    processor = clip_image_processor(cfg["image_size"])
    pixels = [clip_pixels(processor, b.images) for b in pool]
    optimizer, schedule = make_optimizer(model.parameters(), cfg, cfg["steps"])
    batches = iter(BucketSampler([len(b.prompts) for b in pool], cfg["batch_size"], seed))
    model.train()
    for step in tqdm(range(cfg["steps"]), desc="clip"):
        b, idx = next(batches)
        captions = [pool[b].prompts[i] for i in idx]
        negatives = [hard_negative(c, rng) for c in captions]
        text = tokenizer(captions + negatives, padding="max_length", truncation=True, return_tensors="pt")
        out = model(input_ids=text.input_ids, pixel_values=pixels[b][idx])
        loss = contrastive_loss(out.logits_per_image)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            n = len(idx)
            logits = out.logits_per_image.detach()
            log.write(
                step=step,
                loss=loss.item(),
                # how often an image's own caption beats every other caption in the batch ...
                retrieval_accuracy=(logits[:, :n].argmax(1) == torch.arange(n)).float().mean().item(),
                # ... and beats the same caption with one attribute changed
                hard_negative_accuracy=(logits.diagonal() > logits[:, n:].diagonal()).float().mean().item(),
            )
    return model.eval()


def random_crop(images: torch.Tensor, size: int, align: int, generator: torch.Generator) -> torch.Tensor:
    """One random size x size window of a batch, at offsets that are multiples of `align` (the VAE's downsampling
    factor, so a crop's latents are a sub-grid of the whole image's). The VAE is convolutional (no attention), so
    it trains on crops several times cheaper than whole images and still encodes any bucket."""
    height, width = images.shape[-2:]
    top = align * int(torch.randint((height - size) // align + 1, (1,), generator=generator))
    left = align * int(torch.randint((width - size) // align + 1, (1,), generator=generator))
    return images[..., top : top + size, left : left + size]


def train_vae(pool, cfg: dict, log: MetricsLog, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = make_vae(cfg)
    optimizer, schedule = make_optimizer(vae.parameters(), cfg, cfg["steps"])
    batches = iter(BucketSampler([len(b.prompts) for b in pool], cfg["batch_size"], seed))
    generator = torch.Generator().manual_seed(seed)
    factor = 2 ** (len(cfg["block_out_channels"]) - 1)
    vae.train()
    for step in tqdm(range(cfg["steps"]), desc="vae"):
        b, idx = next(batches)
        x = random_crop(to_model_range(pool[b].images[idx]), cfg["crop_size"], factor, generator)
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(reconstruction, x)
        mse = F.mse_loss(reconstruction, x)
        kl = posterior.kl().mean()
        loss = l1 + mse + cfg["kl_weight"] * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))  # range [-1, 1] has peak-to-peak 2
            log.write(step=step, loss=loss.item(), l1=l1.item(), kl=kl.item(), psnr=psnr)
    return vae.eval()


def train_tiny_vae(pool, vae: AutoencoderKL, cfg: dict, log: MetricsLog, seed: int,
                   generated: LatentBuckets | None = None) -> AutoencoderKL | AutoencoderTiny:
    """Fit a small VAE (`make_tiny_vae`) to the frozen `vae`, as TAESD is fitted to SD's VAE: its decoder learns to
    decode like the VAE's decoder, its encoder to give the VAE's posterior (`encoding_error`). Trained on crops, like
    the VAE.

    A generator's latents are not an encoder's: the teacher's, at CFG 4, have 1.75x the encoded latents' spread,
    which a decoder fitted to encoded latents alone turns into wrong colours. So the decoder also sees latents moved
    off the encoder's manifold by Gaussian noise (up to `latent_noise` of their std) and, given `generated`
    (`ladd.synth` shards), half of every batch is crops of latents the teacher actually made."""
    torch.manual_seed(seed)
    tiny = make_tiny_vae(cfg, vae).to(memory_format=torch.channels_last)
    optimizer, schedule = make_optimizer(tiny.parameters(), cfg, cfg["steps"])
    batches = iter(BucketSampler([len(b.prompts) for b in pool], cfg["batch_size"], seed))
    generator = torch.Generator().manual_seed(seed)
    factor = latent_downsampling(vae)
    tiny.train()
    for step in tqdm(range(cfg["steps"]), desc="tiny vae"):
        b, idx = next(batches)
        x = random_crop(to_model_range(pool[b].images[idx]), cfg["crop_size"], factor, generator)
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            noise = torch.rand(len(x), 1, 1, 1, generator=generator) * cfg["latent_noise"] / vae.config.scaling_factor
            latents = posterior.sample(generator) + noise * torch.randn(posterior.mean.shape, generator=generator)
            if generated is not None:
                made = generated.batch(step, len(x) // 2, seed)["latents"]
                made = made / vae.config.scaling_factor + vae.config.shift_factor  # model space -> the VAE's own
                latents = torch.cat([latents[len(made):], random_crop(made, cfg["crop_size"] // factor, 1, generator)])
            target = vae.decode(latents).sample
        reconstruction = tiny.decode(latents).sample
        mse = F.mse_loss(reconstruction, target)
        decode_loss = F.l1_loss(reconstruction, target) + mse
        encode_loss = encoding_error(tiny, x, posterior)
        loss = decode_loss + encode_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))  # against the big decoder's output
            log.write(step=step, loss=loss.item(), decode_loss=decode_loss.item(), encode_loss=encode_loss.item(),
                      psnr=psnr)
    return tiny.eval()


def encoding_error(small_vae, x: torch.Tensor, posterior) -> torch.Tensor:
    """How far `small_vae`'s encoding of `x` is from the big VAE's `posterior`: AutoencoderTiny encodes to a point,
    the posterior mean; an AutoencoderKL to a distribution, whose spread img2img samples from too."""
    if isinstance(small_vae, AutoencoderTiny):
        return F.mse_loss(small_vae.encode(x).latents, posterior.mean)
    dist = small_vae.encode(x).latent_dist
    return F.mse_loss(dist.mean, posterior.mean) + F.mse_loss(dist.std, posterior.std)


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, pool, batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Raw posterior (mean, std) of every pooled image, per bucket."""
    encoded = []
    for bucket in tqdm(pool, desc="encoding"):
        means, stds = [], []
        for start in range(0, len(bucket.prompts), batch_size):
            dist = vae.encode(to_model_range(bucket.images[start : start + batch_size])).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        encoded.append((torch.cat(means), torch.cat(stds)))
    return encoded


def measure_latent_scaling(encoded) -> tuple[float, float]:
    """shift_factor = mean and scaling_factor = 1 / std of the latents, so the transformer sees unit variance."""
    means = torch.cat([m.flatten() for m, _ in encoded])
    return means.mean().item(), 1.0 / means.std().item()


class PromptTable:
    """Every pool prompt (and "", the dropped-text prompt) encoded once, exactly as the pipeline encodes them: the
    frozen text encoders would otherwise recompute the same states at every teacher step
    (`experiments/teacher_step_cost.py` measures the difference)."""

    def __init__(self, pipe, prompts, batch_size: int = 512):
        unique = sorted(set(prompts) | {""})
        self.row = {prompt: i for i, prompt in enumerate(unique)}
        encoded = [encode_prompts(pipe, unique[i : i + batch_size], max_sequence_length(pipe))
                   for i in tqdm(range(0, len(unique), batch_size), desc="encoding prompts")]
        self.embeds = torch.cat([e for e, _ in encoded])
        self.pooled = torch.cat([p for _, p in encoded])

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor([self.row[p] for p in prompts])
        return self.embeds[rows], self.pooled[rows]


class TeacherCheckpoint:
    """Everything a killed teacher build needs to go on exactly where it stopped: weights, EMA, optimiser, schedule,
    both random streams, the step and the minutes trained. One file, written under a temporary name and renamed
    (a kill never leaves half of it); `fingerprint` (the build's config) must match to resume."""

    def __init__(self, path: Path, fingerprint: dict):
        self.path, self.fingerprint = Path(path), json.loads(json.dumps(fingerprint, default=str))

    def save(self, step: int, minutes: float, transformer, ema, optimizer, schedule, sampler, generator) -> None:
        state = {"fingerprint": self.fingerprint, "step": step, "minutes": minutes,
                 "transformer": transformer.state_dict(), "ema": ema.state_dict(),
                 "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "sampler_rng": sampler.generator.get_state(), "rng": generator.get_state()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, transformer, ema, optimizer, schedule, sampler, generator) -> tuple[int, float]:
        """Restore into the fresh objects; returns (steps done, minutes trained), (0, 0) without a checkpoint."""
        if not self.path.is_file():
            return 0, 0.0
        state = torch.load(self.path, weights_only=False)
        if state["fingerprint"] != self.fingerprint:
            raise LaddError(f"{self.path}: a checkpoint of a differently configured build; remove it or use "
                            f"another --work folder")
        transformer.load_state_dict(state["transformer"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        sampler.generator.set_state(state["sampler_rng"])
        generator.set_state(state["rng"])
        return state["step"], state["minutes"]


def train_teacher(pipe, pool, encoded, cfg: dict, log: MetricsLog, seed: int, snapshot_dir: Path | None,
                  checkpoint: TeacherCheckpoint | None = None):
    """Rectified-flow training of `pipe.transformer`; returns the EMA weights' model. Snapshots EMA weights
    every `snapshot_every` steps with the elapsed minutes (for the accuracy-vs-training-time curve); with
    `checkpoint`, resumes from it and rewrites it every `checkpoint_every` steps."""
    torch.manual_seed(seed)
    transformer = pipe.transformer
    transformer.train()
    vae = pipe.vae
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor
    ema = EMAModel(transformer.parameters(), decay=cfg["ema_decay"], use_ema_warmup=True, power=0.75)
    optimizer, schedule = make_optimizer(transformer.parameters(), cfg, cfg["steps"])
    sampler = BucketSampler([len(b.prompts) for b in pool], cfg["batch_size"], seed)
    generator = torch.Generator().manual_seed(seed)
    done, minutes = (checkpoint.load(transformer, ema, optimizer, schedule, sampler, generator) if checkpoint
                     else (0, 0.0))
    log.resume(done, "step")
    batches = iter(sampler)
    started = time.time() - 60 * minutes
    prompt_table = PromptTable(pipe, [p for bucket in pool for p in bucket.prompts])
    for step in tqdm(range(done, cfg["steps"]), desc="teacher", initial=done, total=cfg["steps"]):
        b, idx = next(batches)
        mean, std = encoded[b]
        x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator) - shift) * scale
        prompts = [pool[b].prompts[i] for i in idx]
        drop = torch.rand(len(prompts), generator=generator) < cfg["text_dropout"]
        prompts = ["" if d else p for p, d in zip(prompts, drop)]  # "" is what CFG's negative prompt encodes
        prompt_embeds, pooled = prompt_table(prompts)
        loss = diffusion_loss(transformer, x0, prompt_embeds, pooled, cfg["logit_mean"], cfg["logit_std"],
                              generator=generator)
        training_step(loss, transformer, optimizer, schedule, ema, cfg["max_grad_norm"], log, step, cfg["steps"] - 1,
                      started)
        if snapshot_dir and cfg["snapshot_every"] and (step + 1) % cfg["snapshot_every"] == 0:
            ema_state = {n: p.detach().clone() for n, p in zip(
                [n for n, _ in transformer.named_parameters()], ema.shadow_params)}
            snapshot_dir.mkdir(parents=True, exist_ok=True)
            name = f"step-{step + 1:06d}"
            save_file(ema_state, str(snapshot_dir / f"{name}.safetensors"))
            with (snapshot_dir / "snapshots.jsonl").open("a") as f:
                f.write(json.dumps({"name": name, "step": step + 1, "minutes": (time.time() - started) / 60}) + "\n")
        if checkpoint and cfg["checkpoint_every"] and (step + 1) % cfg["checkpoint_every"] == 0:
            checkpoint.save(step + 1, (time.time() - started) / 60, transformer, ema, optimizer, schedule, sampler,
                            generator)
    ema.copy_to(transformer.parameters())
    return transformer.eval()


def save_clip(clip: CLIPModel, tokenizer: CLIPTokenizer, image_size: int, out: Path) -> None:
    clip.save_pretrained(out, safe_serialization=True)
    CLIPProcessor(image_processor=clip_image_processor(image_size), tokenizer=tokenizer).save_pretrained(out)


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(cfg: dict, out_dir: Path, work_dir: Path) -> dict:
    timings: dict[str, float] = {}
    report: dict = {"config": cfg, "minutes": timings}
    seed = cfg["seed"]
    stages = cfg["stages"]

    start = time.time()
    pool = render_pool(cfg["data"]["num_images"], seed, exclude=heldout_prompts())
    timings["render"] = (time.time() - start) / 60

    clip_dir = out_dir / "shapes-clip"
    teacher_cfg = cfg["teacher"]
    if "clip" in stages:
        start = time.time()
        tokenizer = build_tokenizer()
        clip = train_clip(pool, tokenizer, cfg["clip"], MetricsLog(work_dir / "clip.csv"), seed)
        save_clip(clip, tokenizer, cfg["clip"]["image_size"], clip_dir)
        timings["clip"] = (time.time() - start) / 60
    else:
        tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
        clip = CLIPModel.from_pretrained(clip_dir).eval()

    scene_encoder = None
    if "scene_encoder" in stages:
        start = time.time()
        scene_encoder = train_scene_encoder(tokenizer, cfg["scene_encoder"], 2 * cfg["clip"]["text_width"],
                                            MetricsLog(work_dir / "scene_encoder.csv"), seed, heldout_prompts())
        scene_encoder.save_pretrained(work_dir / "scene_encoder")  # usable (e.g. with teacher snapshots) right away
        timings["scene_encoder"] = (time.time() - start) / 60
    elif (out_dir / cfg["reuse_from"] / "text_encoder_3").is_dir():
        scene_encoder = T5EncoderModel.from_pretrained(out_dir / cfg["reuse_from"] / "text_encoder_3").eval()

    if "vae" in stages:
        start = time.time()
        vae = train_vae(pool, cfg["vae"], MetricsLog(work_dir / "vae.csv"), seed)
        timings["vae"] = (time.time() - start) / 60
    else:
        vae = AutoencoderKL.from_pretrained(out_dir / cfg["reuse_from"] / "vae").eval()

    start = time.time()
    encoded = encode_pool(vae, pool) if "vae" in stages or "teacher" in stages else None
    if "vae" in stages:
        shift, scaling = measure_latent_scaling(encoded)
        vae.register_to_config(shift_factor=shift, scaling_factor=scaling)
        vae.save_pretrained(work_dir / "vae")  # usable (e.g. to inspect teacher snapshots) before the build ends
    timings["encode"] = (time.time() - start) / 60
    report["latent_scaling"] = {"shift_factor": vae.config.shift_factor, "scaling_factor": vae.config.scaling_factor}

    if "tiny_vae" in stages:
        start = time.time()
        generated = LatentBuckets(cfg["tiny_vae"]["generated"]) if cfg["tiny_vae"]["generated"] else None
        tiny_vae = train_tiny_vae(pool, vae, cfg["tiny_vae"], MetricsLog(work_dir / "tiny_vae.csv"), seed, generated)
        tiny_vae.save_pretrained(out_dir / cfg["tiny_vae"]["name"])
        timings["tiny_vae"] = (time.time() - start) / 60
        report["tiny_vae_parameters"] = num_params(tiny_vae)

    if "teacher" in stages:
        start = time.time()
        torch.manual_seed(seed)
        transformer = make_transformer(
            teacher_cfg, vae.config.latent_channels, cfg["clip"]["text_width"], cfg["clip"]["embed_dim"]
        )
        if teacher_cfg["init_from"]:  # go on training a built teacher (e.g. past the build's hour)
            built = SD3Transformer2DModel.from_pretrained(Path(teacher_cfg["init_from"]) / "transformer")
            transformer.load_state_dict(built.state_dict())
        pipe = assemble_pipeline(tokenizer, text_encoder_from_clip(clip), vae, transformer, teacher_scheduler(),
                                 scene_encoder)
        # the whole build's config: a teacher resumed on another VAE's latents would be silently wrong
        checkpoint = TeacherCheckpoint(work_dir / f"{teacher_cfg['name']}-checkpoint.pt", cfg)
        train_teacher(pipe, pool, encoded, teacher_cfg, MetricsLog(work_dir / f"{teacher_cfg['name']}.csv"), seed,
                      work_dir / f"{teacher_cfg['name']}-snapshots", checkpoint)
        timings["teacher"] = (time.time() - start) / 60
        save_pipeline(
            pipe,
            out_dir / teacher_cfg["name"],
            num_inference_steps=teacher_cfg["sample_steps"],
            guidance_scale=teacher_cfg["guidance_scale"],
            height=64,
            width=64,
        )
        report["parameters"] = {
            "teacher": num_params(transformer),
            "text_encoder": num_params(pipe.text_encoder),
            "scene_encoder": num_params(scene_encoder) if scene_encoder is not None else 0,
            "vae": num_params(vae),
            "clip": num_params(clip),
        }
    timings["total"] = sum(timings.values())
    return report


def init_from_error(cfg: dict) -> str | None:
    """Why `teacher.init_from` cannot initialise the configured teacher (None when it can)."""
    init = Path(cfg["teacher"]["init_from"])
    if not (init / "transformer" / "config.json").is_file():  # a local folder only: never a hub lookup
        return f"teacher.init_from={init}: no transformer there (a pipeline folder, e.g. models/shapes-sd3)"
    found = SD3Transformer2DModel.load_config(init / "transformer")
    expected = make_transformer(cfg["teacher"], cfg["vae"]["latent_channels"], cfg["clip"]["text_width"],
                                cfg["clip"]["embed_dim"]).config
    expected = json.loads(json.dumps(dict(expected)))  # as saved: tuples become lists
    differ = sorted(k for k, v in expected.items() if not k.startswith("_") and k in found and found[k] != v)
    if differ:
        return f"teacher.init_from={init}: its transformer differs from the configured teacher in {', '.join(differ)}"
    return None


def main(argv=None) -> int:
    parser = OneLineParser(prog=PROG, description="Build the shapes-world model zoo.")
    parser.add_argument("--config", help="TOML config (default: configs/zoo.toml, or configs/zoo-smoke.toml)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few steps: seconds, for tests")
    parser.add_argument("--out", default=str(MODELS_DIR), help="where the model folders go (default: models/)")
    parser.add_argument("--work", default=None, help="logs and snapshots (default: results/zoo-build)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. teacher.depth=2 teacher.name=x")
    args = parser.parse_args(argv)
    config_path = args.config or CONFIGS_DIR / ("zoo-smoke.toml" if args.smoke else "zoo.toml")
    cfg = load_dict_config(config_path, args.overrides)
    if "tiny_vae" in cfg["stages"] and (problem := tiny_vae_config_error(cfg["tiny_vae"])):
        raise LaddError(problem)
    generated = cfg["tiny_vae"]["generated"] if "tiny_vae" in cfg["stages"] else ""
    if generated and not shard_paths(generated):
        raise LaddError(f"tiny_vae.generated={generated}: no ladd.synth shards there")
    out_dir = Path(args.out)
    if "teacher" in cfg["stages"] and cfg["teacher"]["init_from"] and (problem := init_from_error(cfg)):
        raise LaddError(problem)
    work_dir = Path(args.work) if args.work else RESULTS_DIR / "zoo-build"
    torch.set_num_threads(max(1, torch.get_num_threads()))
    report = build(cfg, out_dir, work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    name = cfg["teacher"]["name"] if "teacher" in cfg["stages"] else "zoo"
    (work_dir / f"{name}-build.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["minutes"], indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
