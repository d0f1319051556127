"""Diffusion-DPO on a rectified-flow teacher through a LoRA (the paper's Sec. 4.5, after Wallace et al. 2023):
`python -m ladd.dpo [CONFIG] [key=value ...]`, or `accelerate launch -m ladd.dpo ...`.

For a pair of images of one prompt (preferred w, rejected l), with the same t and the same noise for both:

    e(x)  = ||F*(x) - F(x_t, t)||^2, averaged over the latent      the velocity error (`ladd.flow`'s target)
    L     = -log sigmoid(-beta/2 * ((e_model(w) - e_ref(w)) - (e_model(l) - e_ref(l))))

The model is the teacher plus a LoRA on every linear layer (`peft`); the reference is the same network with the
adapter disabled, so no second copy is held. At initialisation model = reference and L = log 2. EMA is off, as in the
paper's LoRA training. The outputs, in OUT:

    lora/pytorch_lora_weights.safetensors   diffusers' LoRA format: `pipe.load_lora_weights(OUT / "lora")` applies it
                                            to the teacher, or to a LADD student of the same architecture
    pipeline/                               the teacher with the LoRA fused: the DPO teacher, for `ladd.synth` and
                                            `ladd.train` (`teacher=`, `student_from=`)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import StableDiffusion3Pipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.conditioning import encode_images, encode_prompts, predict_velocity, to_model_range
from ladd.config import load_config, to_dict
from ladd.flow import add_noise, sample_logit_normal, velocity_target
from ladd.logs import MetricsLog
from ladd.optim import lr_schedule
from ladd.pipelines import fuse_lora, load_pipeline, pipeline_folder
from ladd.preferences import read_preferences
from ladd.sampling import read_sampling_defaults

PROG = "python -m ladd.dpo"
LORA_DIR, PIPELINE_DIR, CACHE_FILE = "lora", "pipeline", "preferences-cache.safetensors"


@dataclass
class DpoConfig:
    model: str = ""  # the teacher's pipeline folder
    preferences: str = ""  # a preference table (`ladd.preferences`)
    out: str = "results/dpo/run"
    resume: str = "auto"  # "auto": the latest checkpoint in <out>; "": start fresh
    seed: int = 0
    iterations: int = 3000  # the paper's 3k
    batch_size: int = 8  # pairs per iteration (per process)
    lr: float = 1e-4
    warmup: int = 50
    rank: int = 256  # the paper's LoRA rank
    alpha: float = 0.0  # LoRA alpha; 0 = the rank (a scale of 1)
    beta: float = 1000.0  # the KL weight; ours for mean-reduced velocity errors (SDXL's 5000 is for epsilon errors)
    logit_mean: float = 0.0  # t ~ pi(t; m, s), the teacher's own training distribution
    logit_std: float = 1.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    cpu: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2

    def check(self) -> None:
        for name in ("iterations", "batch_size", "rank", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise LaddError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0 or not self.beta > 0 or self.alpha < 0:
            raise LaddError("lr and beta must be positive, alpha not negative")
        if self.mixed_precision not in ("no", "bf16"):
            raise LaddError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")


# --- the objective --------------------------------------------------------------------------------------------


def velocity_error(velocity: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """e = ||F* - F||^2 per sample, averaged over the latent's elements."""
    return (velocity.float() - velocity_target(x0, noise).float()).pow(2).flatten(1).mean(1)


def implicit_reward_margin(model_w: torch.Tensor, model_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
                           beta: float) -> torch.Tensor:
    """r = -beta/2 ((e_model(w) - e_ref(w)) - (e_model(l) - e_ref(l))) per pair: positive when the model, against the
    reference, prefers the preferred image."""
    return -0.5 * beta * ((model_w - ref_w) - (model_l - ref_l))


def dpo_loss(model_w: torch.Tensor, model_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Diffusion-DPO: -log sigmoid(r), r the implicit reward margin, per-pair weighted. Lowering the preferred
    sample's error (against the reference) raises the implicit reward and lowers the loss."""
    losses = -F.logsigmoid(implicit_reward_margin(model_w, model_l, ref_w, ref_l, beta))
    return losses.mean() if weight is None else (losses * weight).sum() / weight.sum()


def linear_layer_names(transformer) -> list[str]:
    return sorted(name for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear))


def add_lora(transformer, rank: int, alpha: float = 0.0):
    """A LoRA on every linear layer; only its parameters train (the B matrices start at zero: model = reference)."""
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=linear_layer_names(transformer),
                                       init_lora_weights=True))
    return transformer


def pair_errors(transformer, batch: dict, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e(w), e(l)) of `transformer` on both images of every pair, at the same t and noise, in one forward."""
    x0 = torch.cat([batch["preferred"], batch["rejected"]])
    noise, t = torch.cat([noise, noise]), torch.cat([t, t])
    embeds, pooled = (torch.cat([batch[k], batch[k]]) for k in ("prompt_embeds", "pooled_prompt_embeds"))
    errors = velocity_error(predict_velocity(transformer, add_noise(x0, noise, t), t, embeds, pooled), x0, noise)
    return errors.chunk(2)


def dpo_iteration(transformer, batch: dict, cfg: DpoConfig, generator=None) -> tuple[torch.Tensor, dict]:
    """The loss of one batch of pairs, with the reference's errors from the same network, adapter disabled."""
    x0 = batch["preferred"]
    t = sample_logit_normal(len(x0), cfg.logit_mean, cfg.logit_std, generator=generator, device=x0.device)
    t = t.to(x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    model_w, model_l = pair_errors(transformer, batch, t, noise)
    network = getattr(transformer, "module", transformer)  # the adapter switch is on the unwrapped model
    with torch.no_grad():
        network.disable_adapters()
        try:
            ref_w, ref_l = pair_errors(network, batch, t, noise)
        finally:
            network.enable_adapters()
    loss = dpo_loss(model_w, model_l, ref_w, ref_l, cfg.beta, batch.get("weight"))
    reward = implicit_reward_margin(model_w, model_l, ref_w, ref_l, cfg.beta)
    return loss, {"loss": loss.item(), "implicit_reward_margin": reward.mean().item(),
                  "accuracy": (reward > 0).float().mean().item(), "error_w": model_w.mean().item(),
                  "error_l": model_l.mean().item()}


# --- data -----------------------------------------------------------------------------------------------------


class PreferenceLatents:
    """Every pair's latents (the VAE posterior's mean) and text embeddings, encoded once and cached in OUT; batches
    are a pure function of (seed, iteration, process), one image size per batch, so resuming is exact."""

    def __init__(self, pipe, table, out: Path, max_sequence_length: int):
        digest = hashlib.sha256(table.to_json().encode()).hexdigest()[:16]
        cache = out / CACHE_FILE
        if cache.is_file() and json.loads(load_metadata(cache)).get("digest") == digest:
            tensors = load_file(str(cache))
        else:
            tensors = self.encode(pipe, table, max_sequence_length)
            out.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(cache), metadata={"meta": json.dumps({"digest": digest})})
        self.groups = [{k[len(f"{g}."):]: v for k, v in tensors.items() if k.startswith(f"{g}.")}
                       for g in sorted({k.split(".")[0] for k in tensors}, key=int)]
        self.sizes = torch.tensor([len(g["preferred"]) for g in self.groups], dtype=torch.float)

    @staticmethod
    @torch.no_grad()
    def encode(pipe, table, max_sequence_length: int) -> dict[str, torch.Tensor]:
        def pixels(paths):
            arrays = []
            for path in paths:
                try:
                    with Image.open(path) as image:
                        arrays.append(np.asarray(image.convert("RGB")))
                except OSError as error:
                    raise LaddError(f"cannot read preference image {path} ({error})") from None
            return to_model_range(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))

        sizes = [image_size(p) for p in table["preferred"]]
        tensors = {}
        for g, size in enumerate(sorted(set(sizes))):
            rows = table[[s == size for s in sizes]]
            if any(image_size(p) != size for p in rows["rejected"]):
                raise LaddError(f"a pair's two images differ in size (preferred {size[0]}x{size[1]})")
            parts = {"preferred": [], "rejected": [], "prompt_embeds": [], "pooled_prompt_embeds": [], "weight": []}
            for start in tqdm(range(0, len(rows), 64), desc=f"encoding pairs {size[0]}x{size[1]}"):
                chunk = rows.iloc[start:start + 64]
                parts["preferred"].append(encode_images(pipe.vae, pixels(chunk["preferred"])))
                parts["rejected"].append(encode_images(pipe.vae, pixels(chunk["rejected"])))
                embeds, pooled = encode_prompts(pipe, list(chunk["prompt"]), max_sequence_length)
                parts["prompt_embeds"].append(embeds)
                parts["pooled_prompt_embeds"].append(pooled)
                parts["weight"].append(torch.tensor(chunk["weight"].to_numpy(), dtype=torch.float))
            tensors.update({f"{g}.{k}": torch.cat(v).float().contiguous() for k, v in parts.items()})
        return tensors

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def batch(self, iteration: int, batch_size: int, seed: int, process_index: int = 0) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(hash((seed, iteration, process_index)) % (2**63))
        group = int(torch.multinomial(self.sizes, 1, generator=generator))
        index = torch.randint(int(self.sizes[group]), (batch_size,), generator=generator)
        return {k: v[index] for k, v in self.groups[group].items()}


def image_size(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as error:
        raise LaddError(f"cannot read preference image {path} ({error})") from None


def load_metadata(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("meta", "{}")


# --- the run --------------------------------------------------------------------------------------------------


def checkpoints(out: Path) -> list[Path]:
    return sorted(p for p in (out / "checkpoints").glob("step-??????") if (p / "dpo_checkpoint.json").is_file())


def save_lora(pipeline_class, transformer, folder: Path) -> Path:
    """The LoRA in diffusers' format, written beside and swapped in complete."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline_class.save_lora_weights(staging, transformer_lora_layers=get_peft_model_state_dict(transformer))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def fused_teacher(model: str | Path, lora: Path, out: Path) -> Path:
    """The teacher with the LoRA merged into its weights, saved as an ordinary pipeline folder (stock diffusers
    calls: load_lora_weights, fuse_lora, unload_lora_weights)."""
    pipe = fuse_lora(load_pipeline(model), lora)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging, safe_serialization=True)
    defaults = Path(model) / "sampling_defaults.json"
    if defaults.is_file():
        shutil.copy(defaults, staging / defaults.name)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def train(cfg: DpoConfig) -> Path:
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu or not torch.cuda.is_available(),
                              step_scheduler_with_optimizer=False)
    out = Path(cfg.out)
    set_seed(cfg.seed)
    pipe = load_pipeline(cfg.model)
    pipeline_class = type(pipe) if isinstance(pipe, StableDiffusion3Pipeline) else StableDiffusion3Pipeline
    data = PreferenceLatents(pipe, read_preferences(cfg.preferences), out,
                             read_sampling_defaults(cfg.model).get("max_sequence_length", 256))
    transformer = add_lora(pipe.transformer, cfg.rank, cfg.alpha).train()
    del pipe  # the text encoders and the VAE are not needed past the cache
    parameters = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=0.0)
    schedule = lr_schedule(optimizer, cfg.warmup)
    transformer, optimizer, schedule = accelerator.prepare(transformer, optimizer, schedule)
    model = accelerator.unwrap_model(transformer)

    start = 0
    resume = (checkpoints(out)[-1] if checkpoints(out) else None) if cfg.resume == "auto" else \
        (Path(cfg.resume) if cfg.resume else None)
    if resume is not None:
        accelerator.load_state(str(resume))
        start = json.loads((resume / "dpo_checkpoint.json").read_text())["iteration"]
        accelerator.print(f"resumed from {resume} at iteration {start}")
    else:
        set_seed(cfg.seed + accelerator.process_index)
    log = MetricsLog(out / "metrics.csv").resume(start, "iteration") if accelerator.is_main_process else None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    for iteration in tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="dpo",
                          disable=not accelerator.is_main_process):
        began = time.time()
        batch = {k: v.to(accelerator.device) for k, v in
                 data.batch(iteration, cfg.batch_size, cfg.seed, accelerator.process_index).items()}
        with accelerator.autocast():
            loss, stats = dpo_iteration(transformer, batch, cfg)
        accelerator.backward(loss)
        norm = accelerator.clip_grad_norm_(parameters, cfg.max_grad_norm)
        if torch.isfinite(norm):
            optimizer.step()
            schedule.step()
        optimizer.zero_grad(set_to_none=True)
        done = iteration + 1
        if log is not None and (iteration % cfg.log_every == 0 or done == cfg.iterations):
            log.write(iteration=iteration, seconds=time.time() - began, lr=schedule.get_last_lr()[0],
                      grad_norm=norm.item(), **stats)
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
            save_state(accelerator, out, done, cfg.keep_checkpoints)
    if accelerator.is_main_process:
        lora = save_lora(pipeline_class, model, out / LORA_DIR)
        fused_teacher(cfg.model, lora, out / PIPELINE_DIR)
        accelerator.print(f"LoRA saved to {lora}; DPO teacher (LoRA fused) saved to {out / PIPELINE_DIR}")
    accelerator.wait_for_everyone()
    return out


def save_state(accelerator, out: Path, iteration: int, keep: int) -> None:
    """accelerate's state under a temporary name, renamed when complete (a killed run never leaves half of one)."""
    final = out / "checkpoints" / f"step-{iteration:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "dpo_checkpoint.json").write_text(json.dumps({"iteration": iteration}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Diffusion-DPO through a LoRA on an SD3-style teacher.")
    parser.add_argument("config", nargs="?", help="TOML config, e.g. configs/dpo-shapes.toml")
    parser.add_argument("overrides", nargs="*", help="overrides, e.g. iterations=100 beta=500")
    args = parser.parse_args(argv)
    if args.config and "=" in args.config:
        args.overrides, args.config = [args.config, *args.overrides], None
    cfg = load_config(args.config, args.overrides, schema=DpoConfig)
    if not cfg.model or not cfg.preferences:
        raise LaddError("model and preferences must be set (a teacher folder and a preference table)")
    try:
        cfg.model = str(pipeline_folder(cfg.model))
    except ValueError as error:
        raise LaddError(f"model: {error}") from None
    read_preferences(cfg.preferences)  # a bad table is refused before any work
    train(cfg)
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
