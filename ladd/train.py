"""LADD training: `python -m ladd.train CONFIG [key=value ...]`, or `accelerate launch -m ladd.train CONFIG ...`.

One iteration (paper Sec. 3 and Fig. 3, bottom row):
  1. data       x0: the teacher's synthetic latents (`python -m ladd.synth`); the student's t from the discrete
                schedule (warm-up p=[0,0,.5,.5], then p=[.7,.1,.1,.1]); x_t = (1-t) x0 + t eps
  2. student    x0_hat = x_t - t F_student(x_t, t)
  3. renoise    t_hat ~ logit-normal(m=1, s=1); fake = renoise(x0_hat, t_hat); real = renoise(x0, t_hat)
  4. G step     the frozen teacher runs on `fake`; its image tokens after each block feed the heads; the
                gradient of L_G flows through the teacher into the student (optional L_distill, free: the teacher's
                own prediction on `fake` is its output; with distill.guidance_scale > 1 one more unconditional
                forward makes the target the teacher's CFG prediction; optional paired loss, free: at t = 1 the
                student starts from the noise the teacher drew x0 from, and its x0_hat is compared with x0);
                only the student is updated
  5. D step     the teacher on `real` (no grad) and the G step's fake features (detached) feed the heads;
                hinge loss (+ optional R1 on real features; + optional matching-aware term: real latents under a
                neighbour's prompt count as fake); only the heads are updated
The teacher never changes: its parameters are frozen and it is not handed to any optimiser.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import SD3Transformer2DModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from tqdm import tqdm

from ladd.checkpoint import HEADS_FILE, export_student, latest_checkpoint, load_checkpoint, save_checkpoint
from ladd.conditioning import encode_prompts, predict_velocity
from ladd.config import load_config
from ladd.data import LatentBuckets, shards_hold
from ladd.discriminator import ADVERSARIAL_LOSSES, FAKE_TERMS, Discriminator, mismatch_loss, r1_penalty
from ladd.features import TeacherFeatures
from ladd.flow import add_noise, classifier_free_guidance, denoise, sample_logit_normal
from ladd.logs import MetricsLog
from ladd.losses import distillation_loss, paired_loss
from ladd.pipelines import load_pipeline, pipeline_folder
from ladd.sampling import read_sampling_defaults
from ladd.schedule import StudentTimestepSchedule


class TrainingError(RuntimeError):
    """A condition that stops training with a one-line message (bad config, diverged run)."""


# --- models -------------------------------------------------------------------------------------------------


def freeze(transformer: SD3Transformer2DModel) -> SD3Transformer2DModel:
    return transformer.requires_grad_(False).eval()


def load_teacher(teacher_dir: str) -> SD3Transformer2DModel:
    return freeze(load_pipeline(teacher_dir).transformer)


def unconditional_embeddings(pipe, cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty prompt's (prompt_embeds, pooled) at the data's text length: CFG's unconditional branch, encoded
    as the pipeline encodes its default negative prompt."""
    plan = Path(cfg["data"]) / "plan.json"
    settings = json.loads(plan.read_text()) if plan.is_file() else read_sampling_defaults(cfg["teacher"])
    return encode_prompts(pipe, [""], settings.get("max_sequence_length", 256))


def init_student(cfg: dict, teacher: SD3Transformer2DModel) -> SD3Transformer2DModel:
    """The student starts as a copy of the teacher, or (scaling study) as another pretrained model's transformer."""
    student = load_teacher(cfg["student_from"]) if cfg["student_from"] else copy.deepcopy(teacher)
    return student.requires_grad_(True).train()


def build_discriminator(cfg: dict, features: TeacherFeatures, teacher) -> Discriminator:
    """Fresh heads, or (`discriminator.init_from`) the trained heads of another run's checkpoint: they judge the
    teacher's features, so they fit any student of the same teacher, e.g. a shallower one."""
    d = cfg["discriminator"]
    disc = Discriminator(
        num_heads=len(features.blocks),
        channels=features.channels,
        pooled_dim=teacher.config.pooled_projection_dim,
        cond_dim=d["cond_dim"],
        hidden=d["hidden"],
        cmap_dim=d["cmap_dim"],
        use_spectral_norm=d["spectral_norm"],
    )
    if d["init_from"]:
        try:
            disc.load_state_dict(load_file(str(Path(d["init_from"]) / HEADS_FILE)))
        except RuntimeError:
            raise TrainingError(f"discriminator.init_from: the heads in {d['init_from']} do not fit this run's "
                                "(their teacher, blocks, hidden, cmap_dim, cond_dim and spectral_norm must match)"
                                ) from None
    return disc


def warmup_schedule(optimizer, warmup: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / max(1, warmup)))


def student_schedule(cfg: dict) -> StudentTimestepSchedule:
    s = cfg["student"]
    return StudentTimestepSchedule(tuple(s["timesteps"]), tuple(s["warmup_probs"]), tuple(s["probs"]), s["switch_at"])


def distill_is_guided(cfg: dict) -> bool:
    """Whether L_distill's target is the teacher's CFG prediction (one more, unconditional, teacher forward)."""
    return cfg["distill"]["weight"] > 0 and cfg["distill"]["guidance_scale"] != 1


def build_training(cfg: dict) -> dict:
    """`assemble_training` for the teacher folder (and student source) that `cfg` names."""
    teacher_pipe = load_pipeline(cfg["teacher"])
    teacher = freeze(teacher_pipe.transformer)
    unconditional = unconditional_embeddings(teacher_pipe, cfg) if distill_is_guided(cfg) else None
    del teacher_pipe  # the text encoders are not needed past this point
    return assemble_training(cfg, teacher, init_student(cfg, teacher), unconditional)


def assemble_training(cfg: dict, teacher: SD3Transformer2DModel, student: SD3Transformer2DModel,
                      unconditional: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Teacher, student, feature hooks, heads, timestep schedule, and both optimisers with their LR schedules
    (plus the unconditional text embeddings when the distillation target is guided). Models built in memory
    (scripts/full_size_cost.py: random weights at SD3's size) enter here."""
    if distill_is_guided(cfg) and unconditional is None:
        raise TrainingError("a guided distillation target needs the empty prompt's text embeddings")
    features = TeacherFeatures(teacher, cfg["discriminator"]["blocks"] or None)
    disc = build_discriminator(cfg, features, teacher)
    if cfg["gradient_checkpointing"]:
        student.enable_gradient_checkpointing()
        teacher.enable_gradient_checkpointing()
    schedule = student_schedule(cfg)
    betas = tuple(cfg["adam_betas"])
    opt_g = torch.optim.AdamW(student.parameters(), lr=cfg["student"]["lr"], betas=betas, weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg["discriminator"]["lr"], betas=betas, weight_decay=0.0)
    return {"teacher": teacher, "student": student, "features": features, "disc": disc, "schedule": schedule,
            "unconditional": unconditional, "g": opt_g, "d": opt_d, "g_schedule": warmup_schedule(opt_g, cfg["warmup"]),
            "d_schedule": warmup_schedule(opt_d, cfg["warmup"])}


MODEL_KEYS = ("student", "teacher", "features", "disc", "schedule", "unconditional")
OPTIMIZER_KEYS = ("g", "d", "g_schedule", "d_schedule")


def split_parts(parts: dict) -> tuple[dict, dict]:
    """`build_training`'s parts as the (models, optimizers) that `ladd_iteration` takes."""
    return {k: parts[k] for k in MODEL_KEYS}, {k: parts[k] for k in OPTIMIZER_KEYS}


# --- one LADD iteration -------------------------------------------------------------------------------------


def teacher_forward(teacher, features: TeacherFeatures, noisy, t_hat, batch):
    """Run the frozen teacher; return (per-block feature grids, its velocity output)."""
    with features.capture():
        velocity = predict_velocity(
            teacher, noisy, t_hat, batch["prompt_embeds"], batch["pooled_prompt_embeds"], batch.get("image_latents")
        )
    return features.grids(*noisy.shape[-2:]), velocity


@torch.no_grad()
def guided_teacher_velocity(teacher, noisy, t_hat, batch, cond_velocity, unconditional, scale: float):
    """The teacher's CFG prediction on `noisy`: its conditional output (already computed, taken without gradient)
    and one unconditional forward on the same input (outside `capture`, so no features are recorded)."""
    embeds, pooled = (u.expand(len(noisy), *u.shape[1:]) for u in unconditional)
    uncond_velocity = predict_velocity(teacher, noisy, t_hat, embeds, pooled, batch.get("image_latents"))
    return classifier_free_guidance(uncond_velocity, cond_velocity, scale)


def borrowed_text(batch: dict) -> dict:
    """The batch with each sample's text taken from its neighbour (a roll by one): the matching-aware
    discriminator's (real image, wrong prompt) pairs; `differs` marks the samples whose borrowed text is not their
    own."""
    borrowed = {**batch, "prompt_embeds": batch["prompt_embeds"].roll(1, 0),
                "pooled_prompt_embeds": batch["pooled_prompt_embeds"].roll(1, 0)}
    borrowed["differs"] = (borrowed["prompt_embeds"] != batch["prompt_embeds"]).flatten(1).any(1)
    return borrowed


def ladd_iteration(iteration: int, batch: dict, models: dict, optimizers: dict, cfg: dict, accelerator) -> dict:
    student, teacher, features, disc = models["student"], models["teacher"], models["features"], models["disc"]
    opt_g, opt_d = optimizers["g"], optimizers["d"]
    d_loss_fn, g_loss_fn = ADVERSARIAL_LOSSES[cfg["discriminator"]["loss"]]
    x0, pooled = batch["latents"], batch["pooled_prompt_embeds"]
    n = len(x0)

    # 1-3: student prediction from the discrete schedule, renoised at t_hat for the discriminator
    t = models["schedule"].sample(n, iteration).to(x0.device, x0.dtype)
    noise = torch.randn_like(x0)
    at_full_noise = t == 1
    if cfg["paired"]["weight"] > 0:
        # at t = 1 the student's input is the noise itself: the noise the teacher drew this latent from makes
        # (x_1, x0) a pair of the teacher's sampler, and leaves every distribution the game sees as it was
        noise = torch.where(at_full_noise.view(-1, 1, 1, 1), batch["noise"], noise)
    x_t = add_noise(x0, noise, t)
    with accelerator.autocast():
        x0_hat = denoise(x_t, t, predict_velocity(student, x_t, t, batch["prompt_embeds"], pooled,
                                                  batch.get("image_latents")))
    t_hat = sample_logit_normal(n, cfg["renoise"]["logit_mean"], cfg["renoise"]["logit_std"], device=x0.device)
    t_hat = t_hat.to(x0.dtype)
    fake = add_noise(x0_hat, torch.randn_like(x0), t_hat)
    real = add_noise(x0, torch.randn_like(x0), t_hat)

    # 4: generator step, through the frozen teacher
    with accelerator.autocast():
        fake_grids, teacher_velocity = teacher_forward(teacher, features, fake, t_hat, batch)
        g_adv = g_loss_fn(disc(fake_grids, t_hat, pooled))
        g_loss = g_adv
        distill = torch.zeros((), device=x0.device)
        if cfg["distill"]["weight"] > 0:
            target_velocity = teacher_velocity
            if models["unconditional"] is not None:
                target_velocity = guided_teacher_velocity(teacher, fake, t_hat, batch, teacher_velocity,
                                                          models["unconditional"], cfg["distill"]["guidance_scale"])
            distill = distillation_loss(x0_hat, fake, t_hat, target_velocity)
            g_loss = g_loss + cfg["distill"]["weight"] * distill
        paired = torch.zeros((), device=x0.device)
        if cfg["paired"]["weight"] > 0:
            paired = paired_loss(x0_hat, x0, at_full_noise)
            g_loss = g_loss + cfg["paired"]["weight"] * paired
    accelerator.backward(g_loss)
    g_norm = accelerator.clip_grad_norm_(student.parameters(), cfg["max_grad_norm"])
    g_ok = bool(torch.isfinite(g_norm))  # gradients are all-reduced, so every process agrees
    if g_ok:
        opt_g.step()
        optimizers["g_schedule"].step()
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)  # the G step also reached the heads; those gradients are not theirs

    # 5: discriminator step on real features and the (detached) fake features
    with torch.no_grad(), accelerator.autocast():
        real_grids, _ = teacher_forward(teacher, features, real, t_hat, batch)
    use_r1 = cfg["discriminator"]["r1_weight"] > 0 and iteration % cfg["discriminator"]["r1_every"] == 0
    if use_r1:
        real_grids = [g.detach().requires_grad_() for g in real_grids]
    groups = [real_grids, [f.detach() for f in fake_grids]]
    group_pooled = [pooled, pooled]
    mismatch_weight = cfg["discriminator"]["mismatch_weight"]
    if mismatch_weight > 0:
        borrowed = borrowed_text(batch)
        with torch.no_grad(), accelerator.autocast():
            mismatch_grids, _ = teacher_forward(teacher, features, real, t_hat, borrowed)
        groups.append(mismatch_grids)
        group_pooled.append(borrowed["pooled_prompt_embeds"])
    with accelerator.autocast():
        # one heads call on every group together (one forward per backward keeps DDP simple)
        logits = disc([torch.cat(grids) for grids in zip(*groups)], t_hat.repeat(len(groups)), torch.cat(group_pooled))
        real_logits, fake_logits = [b[:n] for b in logits], [b[n:2 * n] for b in logits]
        d_loss = d_loss_fn(real_logits, fake_logits)
        mismatch = torch.zeros((), device=x0.device)
        if mismatch_weight > 0:
            mismatch_logits = [b[2 * n:] for b in logits]
            mismatch = mismatch_loss(mismatch_logits, borrowed["differs"], FAKE_TERMS[cfg["discriminator"]["loss"]])
            d_loss = d_loss + mismatch_weight * mismatch
        r1 = torch.zeros((), device=x0.device)
        if use_r1:
            # lazy regularisation: every r1_every iterations, scaled up by the same factor
            r1 = r1_penalty(real_logits, real_grids)
            d_loss = d_loss + cfg["discriminator"]["r1_weight"] * cfg["discriminator"]["r1_every"] * r1
    accelerator.backward(d_loss)
    d_norm = accelerator.clip_grad_norm_(disc.parameters(), cfg["max_grad_norm"])
    d_ok = bool(torch.isfinite(d_norm))
    if d_ok:
        opt_d.step()
        optimizers["d_schedule"].step()
    opt_d.zero_grad(set_to_none=True)

    return {
        "g_loss": g_adv.item(),
        "distill": distill.item(),
        "paired": paired.item(),
        "d_loss": d_loss.item(),
        "r1": r1.item(),
        "mismatch": mismatch.item(),
        "real_logit": torch.stack([r.mean() for r in real_logits]).mean().item(),
        "fake_logit": torch.stack([f.mean() for f in fake_logits]).mean().item(),
        "g_grad_norm": g_norm.item(),
        "d_grad_norm": d_norm.item(),
        "skipped": int(not (g_ok and d_ok)),
    }


# --- the run ------------------------------------------------------------------------------------------------


def train(cfg: dict) -> Path:
    # without a GPU, accelerate only joins the launcher's processes (MULTI_CPU over gloo) when told cpu=True
    cpu = cfg["cpu"] or not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=cfg["mixed_precision"], cpu=cpu)
    out = Path(cfg["out"])
    set_seed(cfg["seed"])  # identical initialisation on every process

    state = accelerator.state
    accelerator.print(f"{state.num_processes} processes ({state.distributed_type.value}, {state.backend or 'no backend'})")
    parts = build_training(cfg)
    teacher, schedule = parts["teacher"], parts["schedule"]
    student, disc = parts["student"], parts["disc"]
    opt_g, opt_d, g_schedule, d_schedule = parts["g"], parts["d"], parts["g_schedule"], parts["d_schedule"]
    data = LatentBuckets(cfg["data"])
    unconditional = parts["unconditional"]
    if unconditional is not None:
        text_length, data_length = unconditional[0].shape[1], data.buckets[0]["prompt_embeds"].shape[1]
        if text_length != data_length:
            raise TrainingError(f"the unconditional text embedding has {text_length} tokens but the data's have "
                                f"{data_length}; set max_sequence_length in {cfg['data']}/plan.json to the synth run's")
        unconditional = tuple(u.to(accelerator.device) for u in unconditional)
    student, disc, opt_g, opt_d, g_schedule, d_schedule = accelerator.prepare(
        student, disc, opt_g, opt_d, g_schedule, d_schedule
    )
    teacher.to(accelerator.device)  # frozen: not prepared, so no wrapper, no optimiser, no gradient sync
    unwrapped = accelerator.unwrap_model(student)
    ema = EMAModel(unwrapped.parameters(), decay=cfg["student"]["ema_decay"])
    ema.to(accelerator.device)

    start = 0
    resume = latest_checkpoint(out) if cfg["resume"] == "auto" else (Path(cfg["resume"]) if cfg["resume"] else None)
    if resume is not None:
        start = load_checkpoint(accelerator, resume, ema, unwrapped)
        accelerator.print(f"resumed from {resume} at iteration {start}")
    else:
        set_seed(cfg["seed"] + accelerator.process_index)  # different noise on every process

    models, optimizers = split_parts({**parts, "student": student, "disc": disc, "unconditional": unconditional,
                                      "g": opt_g, "d": opt_d, "g_schedule": g_schedule, "d_schedule": d_schedule})
    info = {"teacher": str(Path(cfg["teacher"]).resolve()), "config": cfg,
            "tags": scaling_tags(cfg, teacher, unwrapped)}
    log = MetricsLog(out / "metrics.csv", append=start > 0) if accelerator.is_main_process else None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
    skipped_in_a_row = 0
    bar = tqdm(range(start, cfg["iterations"]), initial=start, total=cfg["iterations"], desc="ladd",
               disable=not accelerator.is_main_process)
    for iteration in bar:
        began = time.time()
        batch = data.batch(iteration, cfg["batch_size"], cfg["seed"], accelerator.process_index)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        stats = ladd_iteration(iteration, batch, models, optimizers, cfg, accelerator)
        if not stats["skipped"]:
            ema.step(unwrapped.parameters())
        skipped_in_a_row = skipped_in_a_row + 1 if stats["skipped"] else 0
        if skipped_in_a_row > cfg["max_skipped"]:
            raise TrainingError(f"{skipped_in_a_row} iterations in a row had non-finite gradients at iteration "
                                f"{iteration}; lower the learning rates or restart from an earlier checkpoint")
        done = iteration + 1
        if log is not None and (iteration % cfg["log_every"] == 0 or done == cfg["iterations"]):
            t_probs = schedule.probabilities(iteration)
            log.write(iteration=iteration, seconds=time.time() - began, p_t1=t_probs[0], **stats)
            bar.set_postfix(g=f"{stats['g_loss']:.3f}", d=f"{stats['d_loss']:.3f}")
        if done % cfg["checkpoint_every"] == 0 or done == cfg["iterations"]:
            save_checkpoint(accelerator, out, done, ema, unwrapped, info, keep=cfg["keep_checkpoints"])

    final = out / "pipeline"
    if accelerator.is_main_process:
        exported = copy.deepcopy(unwrapped).eval()
        ema.copy_to(exported.parameters())
        final, linked = export_student(cfg["teacher"], exported, cfg["export"] or final, cfg["export_link_teacher"])
        if cfg["export_link_teacher"]:
            accelerator.print(f"linked to the teacher's: {', '.join(linked) or 'nothing'}")
        accelerator.print(f"student pipeline (EMA weights) saved to {final}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def scaling_tags(cfg: dict, teacher, student) -> dict:
    """The three model sizes of the paper's scaling study (Sec. 4.4), recorded in checkpoints for bench/report."""
    tags = {"student_depth": student.config.num_layers, "teacher_depth": teacher.config.num_layers}
    plan = Path(cfg["data"]) / "plan.json"
    if plan.is_file():
        generator = Path(json.loads(plan.read_text())["model"]) / "transformer" / "config.json"
        if generator.is_file():
            tags["generator_depth"] = json.loads(generator.read_text())["num_layers"]
    return tags


def check_config(cfg: dict) -> None:
    """Refuse a bad config before any work (TrainingError), and turn model names into local folders."""
    for key in ("teacher", "student_from"):
        if cfg[key]:
            try:  # a cached hub repo id becomes its snapshot folder, which pins the revision in the saved config
                cfg[key] = str(pipeline_folder(cfg[key]))
            except ValueError as error:
                raise TrainingError(f"{key}: {error}") from None
    if not Path(cfg["data"]).is_dir():
        raise TrainingError(f"data folder {cfg['data']!r} not found; make it with "
                            f"`python -m ladd.synth --model {cfg['teacher']} --out {cfg['data']} --num N`")
    init_from = cfg["discriminator"]["init_from"]
    if init_from and not (Path(init_from) / HEADS_FILE).is_file():
        raise TrainingError(f"discriminator.init_from: {init_from} holds no heads ({HEADS_FILE}); give a LADD "
                            "checkpoint folder, e.g. results/ladd/RUN/checkpoints/step-001000")
    if cfg["discriminator"]["loss"] not in ADVERSARIAL_LOSSES:
        raise TrainingError(f"discriminator.loss must be one of {sorted(ADVERSARIAL_LOSSES)}")
    for name in ("iterations", "batch_size", "checkpoint_every", "log_every"):
        if cfg[name] <= 0:
            raise TrainingError(f"{name} must be positive, got {cfg[name]}")
    if not math.isfinite(cfg["student"]["lr"]) or cfg["student"]["lr"] <= 0:
        raise TrainingError("student.lr must be a positive number")
    if cfg["discriminator"]["mismatch_weight"] < 0:
        raise TrainingError("discriminator.mismatch_weight must not be negative")
    if cfg["discriminator"]["mismatch_weight"] > 0 and cfg["batch_size"] < 2:
        raise TrainingError("discriminator.mismatch_weight > 0 borrows prompts within a batch: batch_size must be >= 2")
    if cfg["distill"]["weight"] < 0 or cfg["distill"]["guidance_scale"] < 0:
        raise TrainingError("distill.weight and distill.guidance_scale must not be negative")
    if cfg["paired"]["weight"] < 0:
        raise TrainingError("paired.weight must not be negative")
    if cfg["paired"]["weight"] > 0 and not shards_hold(Path(cfg["data"]), "noise"):
        raise TrainingError(f"paired.weight > 0 needs each latent's sampling noise, which {cfg['data']} lacks; add it "
                            f"with `python -m ladd.synth --out {cfg['data']} --add-noise` (teacher-made data only)")
    student_schedule(cfg)  # raises on malformed probabilities


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="LADD: distil an SD3-style teacher into a few-step student.")
    parser.add_argument("config", help="TOML config, e.g. configs/ladd-shapes.toml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. iterations=100 student.lr=1e-5")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_config(cfg)
        train(cfg)
    except (ValueError, FileNotFoundError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
