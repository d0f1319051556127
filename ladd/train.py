"""LADD training: `python -m ladd.train CONFIG [key=value ...]`, or `accelerate launch -m ladd.train CONFIG ...`.

One iteration is the paper's algorithm (Sec. 3 and Fig. 3, bottom row):

    x0      the teacher's synthetic latents (`python -m ladd.synth`) with their text embeddings
    t       the student's discrete timesteps (`StudentTimesteps`: warm-up, then mostly t = 1);  x_t = (1-t) x0 + t eps
    x0_hat  = x_t - t F_student(x_t, t)
    t_hat   ~ logit-normal(m, s);  fake = renoise(x0_hat, t_hat);  real = renoise(x0, t_hat)
    generator step      the frozen teacher runs on `fake`; its image tokens after each block feed the heads, and
                        L_G's gradient flows through the teacher into the student; only the student is updated
    discriminator step  the teacher on `real` (no gradient) and the generator step's `fake` features (detached) feed
                        the heads; L_D; only the heads are updated

The opt-in terms (`ladd.losses`, each with its weight in `LaddConfig`): L_distill with a plain or guided teacher
target in the generator step; matching-aware fakes and R1 in the discriminator step. The teacher never changes:
its parameters are frozen and no optimiser holds them.

`distributed` chooses how several processes share the work: DDP (every process holds the whole student, teacher and
heads; accelerate wraps the student and heads) or FSDP2 (`ladd.sharding`: student and teacher sharded, the heads
replicated, checkpoints through `torch.distributed.checkpoint`). The iteration is the same code either way.
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import SD3Transformer2DModel
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from ladd.checkpoint import export_student, latest_checkpoint, load_checkpoint, save_checkpoint
from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.conditioning import encode_prompts, predict_velocity
from ladd.config import LaddConfig, load_config, to_dict
from ladd.data import LatentBuckets, read_plan
from ladd.discriminator import Discriminator
from ladd.features import TeacherFeatures
from ladd.flow import add_noise, classifier_free_guidance, denoise, sample_logit_normal
from ladd.logs import MetricsLog
from ladd.losses import ADVERSARIAL_LOSSES, distillation_loss, mismatch_loss, r1_penalty
from ladd.optim import lr_schedule
from ladd.pipelines import load_pipeline, pipeline_folder
from ladd.sampling import read_sampling_defaults
from ladd.sharding import (ShardedTraining, gather_ema_student, join_process_group, launcher_plugin, replicate_heads,
                           shard_models, use_fsdp)
from ladd.timesteps import StudentTimesteps

PROG = "python -m ladd.train"


@dataclass
class LaddModels:
    teacher: SD3Transformer2DModel  # frozen (sharded in place under FSDP)
    student: torch.nn.Module  # as prepared by accelerate (wrapped under DDP); sharded in place under FSDP
    features: TeacherFeatures  # hooks on the teacher's blocks
    discriminator: torch.nn.Module  # the heads, wrapped for gradient sync (by accelerate, or DDP under FSDP)
    timesteps: StudentTimesteps
    unconditional: tuple[torch.Tensor, torch.Tensor] | None = None  # the empty prompt's embeddings (guided target)

    @property
    def heads(self) -> torch.nn.Module:
        """The heads without a DDP wrapper: the generator step runs them without gradient sync."""
        return getattr(self.discriminator, "module", self.discriminator)


@dataclass
class LaddOptimizers:
    student: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer
    student_lr: torch.optim.lr_scheduler.LRScheduler
    discriminator_lr: torch.optim.lr_scheduler.LRScheduler


# --- models -------------------------------------------------------------------------------------------------


def freeze(transformer: SD3Transformer2DModel) -> SD3Transformer2DModel:
    return transformer.requires_grad_(False).eval()


def load_teacher(teacher_dir: str) -> SD3Transformer2DModel:
    return freeze(load_pipeline(teacher_dir).transformer)


def distill_is_guided(cfg: LaddConfig) -> bool:
    """Whether L_distill's target is the teacher's CFG prediction (one more, unconditional, teacher forward)."""
    return cfg.distill.weight > 0 and cfg.distill.guidance_scale != 1


def unconditional_embeddings(pipe, cfg: LaddConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty prompt's (prompt_embeds, pooled) at the data's text length: CFG's unconditional branch, encoded
    as the pipeline encodes its default negative prompt."""
    settings = read_plan(cfg.data) or read_sampling_defaults(cfg.teacher)
    return encode_prompts(pipe, [""], settings.get("max_sequence_length", 256))


def init_student(cfg: LaddConfig, teacher: SD3Transformer2DModel) -> SD3Transformer2DModel:
    """The student starts as a copy of the teacher, or (scaling study) as another pretrained model's transformer."""
    student = load_teacher(cfg.student_from) if cfg.student_from else copy.deepcopy(teacher)
    return student.requires_grad_(True).train()


def build_discriminator(cfg: LaddConfig, features: TeacherFeatures, teacher) -> Discriminator:
    d = cfg.discriminator
    return Discriminator(num_heads=len(features.blocks), channels=features.channels,
                         pooled_dim=teacher.config.pooled_projection_dim, cond_dim=d.cond_dim, hidden=d.hidden,
                         cmap_dim=d.cmap_dim, use_spectral_norm=d.spectral_norm)


def assemble_training(cfg: LaddConfig, teacher: SD3Transformer2DModel, student: SD3Transformer2DModel,
                      unconditional: tuple[torch.Tensor, torch.Tensor] | None = None, shard=None
                      ) -> tuple[LaddModels, LaddOptimizers]:
    """Feature hooks, heads, timesteps, and both optimisers with their learning-rate schedules, around a teacher and
    a student (plus the empty prompt's embeddings when the distillation target is guided). Models built in memory
    (`scripts/full_size_cost.py`: random weights at SD3's size) enter here. `shard(teacher, student)`
    (`ladd.sharding.shard_models`) shards teacher and student in place before the optimisers are built over the
    shards."""
    if distill_is_guided(cfg) and unconditional is None:
        raise LaddError("a guided distillation target needs the empty prompt's text embeddings")
    features = TeacherFeatures(teacher, list(cfg.discriminator.blocks) or None)
    discriminator = build_discriminator(cfg, features, teacher)
    if cfg.gradient_checkpointing:
        student.enable_gradient_checkpointing()
        teacher.enable_gradient_checkpointing()
    if shard is not None:
        shard(teacher, student)
    betas = tuple(cfg.adam_betas)
    opt_g = torch.optim.AdamW(student.parameters(), lr=cfg.student.lr, betas=betas, weight_decay=0.0)
    opt_d = torch.optim.AdamW(discriminator.parameters(), lr=cfg.discriminator.lr, betas=betas, weight_decay=0.0)
    models = LaddModels(teacher, student, features, discriminator, cfg.student.schedule(), unconditional)
    return models, LaddOptimizers(opt_g, opt_d, lr_schedule(opt_g, cfg.warmup), lr_schedule(opt_d, cfg.warmup))


def build_training(cfg: LaddConfig, shard=None) -> tuple[LaddModels, LaddOptimizers]:
    """`assemble_training` for the teacher folder (and student source) that `cfg` names."""
    teacher_pipe = load_pipeline(cfg.teacher)
    teacher = freeze(teacher_pipe.transformer)
    unconditional = unconditional_embeddings(teacher_pipe, cfg) if distill_is_guided(cfg) else None
    del teacher_pipe  # the text encoders are not needed past this point
    return assemble_training(cfg, teacher, init_student(cfg, teacher), unconditional, shard)


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


@contextmanager
def frozen(module: torch.nn.Module):
    """No gradient for `module`'s parameters inside the block (gradients still flow through it to its inputs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def apply_update(optimizer, schedule, parameters, max_grad_norm: float, accelerator) -> tuple[torch.Tensor, bool]:
    """Clip, then step the optimiser and its schedule unless the gradient is non-finite (the NaN guard; gradients
    are all-reduced first, so every process agrees). Returns (gradient norm, whether the step was taken)."""
    norm = accelerator.clip_grad_norm_(parameters, max_grad_norm)
    ok = bool(torch.isfinite(norm))
    if ok:
        optimizer.step()
        schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return norm, ok


def generator_step(batch: dict, x0_hat, fake, t_hat, models: LaddModels, optimizers: LaddOptimizers,
                   cfg: LaddConfig, accelerator) -> tuple[dict, list[torch.Tensor]]:
    """L_G = L_adv(heads(teacher(fake))) [+ w · L_distill]; updates the student. The heads run unwrapped and
    frozen: no gradient is computed for them, so under DDP there is nothing of theirs to all-reduce.
    Returns (stats, the fake feature grids for the discriminator step)."""
    _, g_loss_fn, _ = ADVERSARIAL_LOSSES[cfg.discriminator.loss]
    with frozen(models.heads), accelerator.autocast():
        fake_grids, teacher_velocity = teacher_forward(models.teacher, models.features, fake, t_hat, batch)
        adversarial = g_loss_fn(models.heads(fake_grids, t_hat, batch["pooled_prompt_embeds"]))
        loss, distill = adversarial, torch.zeros((), device=fake.device)
        if cfg.distill.weight > 0:
            target_velocity = teacher_velocity
            if models.unconditional is not None:
                target_velocity = guided_teacher_velocity(models.teacher, fake, t_hat, batch, teacher_velocity,
                                                          models.unconditional, cfg.distill.guidance_scale)
            distill = distillation_loss(x0_hat, fake, t_hat, target_velocity)
            loss = loss + cfg.distill.weight * distill
        accelerator.backward(loss)
    lr = optimizers.student.param_groups[0]["lr"]
    norm, ok = apply_update(optimizers.student, optimizers.student_lr, models.student.parameters(), cfg.max_grad_norm,
                            accelerator)
    stats = {"g_loss": adversarial.item(), "distill": distill.item(), "g_grad_norm": norm.item(),
             "g_skipped": int(not ok), "lr": lr}
    return stats, [grid.detach() for grid in fake_grids]


def discriminator_step(iteration: int, batch: dict, real, fake_grids: list[torch.Tensor], t_hat,
                       models: LaddModels, optimizers: LaddOptimizers, cfg: LaddConfig, accelerator) -> dict:
    """L_D = L_adv(heads(teacher(real)), heads(fake features)) [+ w · L_mismatch] [+ w · R1]; updates the heads."""
    d_cfg = cfg.discriminator
    d_loss_fn, _, fake_term = ADVERSARIAL_LOSSES[d_cfg.loss]
    n, pooled = len(real), batch["pooled_prompt_embeds"]
    with torch.no_grad(), accelerator.autocast():
        real_grids, _ = teacher_forward(models.teacher, models.features, real, t_hat, batch)
    use_r1 = d_cfg.r1_weight > 0 and iteration % d_cfg.r1_every == 0
    if use_r1:
        real_grids = [g.detach().requires_grad_() for g in real_grids]
    groups, group_pooled = [real_grids, fake_grids], [pooled, pooled]
    if d_cfg.mismatch_weight > 0:
        borrowed = borrowed_text(batch)
        with torch.no_grad(), accelerator.autocast():
            mismatch_grids, _ = teacher_forward(models.teacher, models.features, real, t_hat, borrowed)
        groups.append(mismatch_grids)
        group_pooled.append(borrowed["pooled_prompt_embeds"])
    zero = torch.zeros((), device=real.device)
    with accelerator.autocast():
        # one heads call on every group together (one forward per backward keeps DDP simple)
        logits = models.discriminator([torch.cat(grids) for grids in zip(*groups)], t_hat.repeat(len(groups)),
                                      torch.cat(group_pooled))
        real_logits, fake_logits = [b[:n] for b in logits], [b[n:2 * n] for b in logits]
        adversarial = d_loss_fn(real_logits, fake_logits)
        mismatch = mismatch_loss([b[2 * n:] for b in logits], borrowed["differs"], fake_term) \
            if d_cfg.mismatch_weight > 0 else zero
        r1 = r1_penalty(real_logits, real_grids) if use_r1 else zero
        # R1 is lazy: applied every r1_every iterations, scaled up by the same factor
        loss = adversarial + d_cfg.mismatch_weight * mismatch + d_cfg.r1_weight * d_cfg.r1_every * r1
    accelerator.backward(loss)
    norm, ok = apply_update(optimizers.discriminator, optimizers.discriminator_lr, models.discriminator.parameters(),
                            cfg.max_grad_norm, accelerator)
    return {"d_loss": loss.item(), "mismatch": mismatch.item(), "r1": r1.item(),
            "real_logit": torch.stack([r.mean() for r in real_logits]).mean().item(),
            "fake_logit": torch.stack([f.mean() for f in fake_logits]).mean().item(),
            "d_grad_norm": norm.item(), "d_skipped": int(not ok)}


def ladd_iteration(iteration: int, batch: dict, models: LaddModels, optimizers: LaddOptimizers, cfg: LaddConfig,
                   accelerator) -> dict:
    x0 = batch["latents"]
    n = len(x0)
    t = models.timesteps.sample(n, iteration).to(x0.device, x0.dtype)
    x_t = add_noise(x0, torch.randn_like(x0), t)
    with accelerator.autocast():
        velocity = predict_velocity(models.student, x_t, t, batch["prompt_embeds"], batch["pooled_prompt_embeds"],
                                    batch.get("image_latents"))
        x0_hat = denoise(x_t, t, velocity)
    t_hat = sample_logit_normal(n, cfg.renoise.logit_mean, cfg.renoise.logit_std, device=x0.device).to(x0.dtype)
    fake = add_noise(x0_hat, torch.randn_like(x0), t_hat)
    real = add_noise(x0, torch.randn_like(x0), t_hat)
    g_stats, fake_grids = generator_step(batch, x0_hat, fake, t_hat, models, optimizers, cfg, accelerator)
    d_stats = discriminator_step(iteration, batch, real, fake_grids, t_hat, models, optimizers, cfg, accelerator)
    return {**g_stats, **d_stats}


# --- the run ------------------------------------------------------------------------------------------------


def scaling_tags(cfg: LaddConfig, teacher, student) -> dict:
    """The three model sizes of the paper's scaling study (Sec. 4.4), recorded in checkpoints for bench/report."""
    tags = {"student_depth": student.config.num_layers, "teacher_depth": teacher.config.num_layers}
    generator = Path(read_plan(cfg.data).get("model", "")) / "transformer" / "config.json"
    if generator.is_file():
        tags["generator_depth"] = json.loads(generator.read_text())["num_layers"]
    return tags


def train(cfg: LaddConfig) -> Path:
    # without a GPU, accelerate only joins the launcher's processes (MULTI_CPU over gloo) when told cpu=True;
    # the learning-rate schedules step once per iteration, not once per process
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu or not torch.cuda.is_available(),
                              step_scheduler_with_optimizer=False)
    fsdp = use_fsdp(cfg.distributed)
    own_group = fsdp and join_process_group(accelerator.device)
    try:
        return run_training(cfg, accelerator, fsdp)
    finally:
        if own_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_training(cfg: LaddConfig, accelerator, fsdp: bool) -> Path:
    out = Path(cfg.out)
    set_seed(cfg.seed)  # identical initialisation on every process

    state = accelerator.state
    sharding = ", sharded with FSDP2" if fsdp else ""
    accelerator.print(f"{state.num_processes} processes ({state.distributed_type.value}, "
                      f"{state.backend or 'no backend'}){sharding}")
    models, optimizers = build_training(cfg, shard_models(cfg.mixed_precision, launcher_plugin()) if fsdp else None)
    data = LatentBuckets(cfg.data)
    if models.unconditional is not None:
        text_length, data_length = models.unconditional[0].shape[1], data.buckets[0]["prompt_embeds"].shape[1]
        if text_length != data_length:
            raise LaddError(f"the unconditional text embedding has {text_length} tokens but the data's have "
                            f"{data_length}; set max_sequence_length in {cfg.data}/plan.json to the synth run's")
        models.unconditional = tuple(u.to(accelerator.device) for u in models.unconditional)
    if fsdp:
        # teacher and student are sharded in place, the heads replicated (ladd.sharding); accelerate keeps the
        # schedules, which its save_state checkpoints with every process's RNG
        models.discriminator = replicate_heads(models.discriminator, accelerator.device)
        optimizers.student_lr, optimizers.discriminator_lr = accelerator.prepare(optimizers.student_lr,
                                                                                 optimizers.discriminator_lr)
        student = models.student
    else:
        (models.student, models.discriminator, optimizers.student, optimizers.discriminator, optimizers.student_lr,
         optimizers.discriminator_lr) = accelerator.prepare(
            models.student, models.discriminator, optimizers.student, optimizers.discriminator,
            optimizers.student_lr, optimizers.discriminator_lr)
        models.teacher.to(accelerator.device)  # frozen: not prepared, so no wrapper, no optimiser, no gradient sync
        student = accelerator.unwrap_model(models.student)
    ema = EMAModel(student.parameters(), decay=cfg.student.ema_decay)  # under FSDP: shards, like the student
    ema.to(accelerator.device)
    sharded = ShardedTraining(student, optimizers.student, models.discriminator, optimizers.discriminator,
                              ema) if fsdp else None

    start = 0
    # different noise on every process; a checkpoint's RNG states replace it (a process the saving run lacked keeps it)
    set_seed(cfg.seed + accelerator.process_index)
    resume = latest_checkpoint(out) if cfg.resume == "auto" else (Path(cfg.resume) if cfg.resume else None)
    if resume is not None:
        start = load_checkpoint(accelerator, resume, ema, student, sharded)
        accelerator.print(f"resumed from {resume} at iteration {start}")

    info = {"teacher": str(Path(cfg.teacher).resolve()), "config": to_dict(cfg),
            "tags": scaling_tags(cfg, models.teacher, student)}
    log = MetricsLog(out / "metrics.csv").resume(start, "iteration") if accelerator.is_main_process else None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    skipped_in_a_row = 0
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="ladd",
               disable=not accelerator.is_main_process)
    for iteration in bar:
        began = time.time()
        batch = data.batch(iteration, cfg.batch_size, cfg.seed, accelerator.process_index)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        stats = ladd_iteration(iteration, batch, models, optimizers, cfg, accelerator)
        g_skipped, d_skipped = stats.pop("g_skipped"), stats.pop("d_skipped")
        if not g_skipped:  # the student changed: the EMA follows it, whatever the heads did
            ema.step(student.parameters())
        skipped = int(g_skipped or d_skipped)
        skipped_in_a_row = skipped_in_a_row + 1 if skipped else 0
        if skipped_in_a_row > cfg.max_skipped:
            raise LaddError(f"{skipped_in_a_row} iterations in a row had non-finite gradients at iteration "
                            f"{iteration}; lower the learning rates or restart from an earlier checkpoint")
        done = iteration + 1
        if log is not None and (iteration % cfg.log_every == 0 or done == cfg.iterations):
            log.write(iteration=iteration, seconds=time.time() - began,
                      p_t1=models.timesteps.probabilities(iteration)[0], **stats, skipped=skipped)
            bar.set_postfix(g=f"{stats['g_loss']:.3f}", d=f"{stats['d_loss']:.3f}")
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
            save_checkpoint(accelerator, out, done, ema, student, info, models.timesteps, keep=cfg.keep_checkpoints,
                            sharded=sharded)

    final = Path(cfg.export) if cfg.export else out / "pipeline"
    exported = gather_ema_student(ema, student) if fsdp else None  # collective: every process takes part
    if accelerator.is_main_process:
        if exported is None:
            exported = copy.deepcopy(student).eval()
            ema.copy_to(exported.parameters())
        final, linked = export_student(cfg.teacher, exported, final, models.timesteps, cfg.export_link_teacher)
        if cfg.export_link_teacher:
            accelerator.print(f"linked to the teacher's: {', '.join(linked) or 'nothing'}")
        accelerator.print(f"student pipeline (EMA weights) saved to {final}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def resolve_paths(cfg: LaddConfig) -> None:
    """Refuse missing inputs before any work, and turn model names into local folders (a cached hub repo id becomes
    its snapshot folder, which pins the revision in the saved config)."""
    if not cfg.teacher:
        raise LaddError("teacher is not set (a pipeline folder or a cached hub id, e.g. teacher=\"models/shapes-sd3\")")
    for key in ("teacher", "student_from"):
        if getattr(cfg, key):
            try:
                setattr(cfg, key, str(pipeline_folder(getattr(cfg, key))))
            except ValueError as error:
                raise LaddError(f"{key}: {error}") from None
    if not cfg.data or not Path(cfg.data).is_dir():
        raise LaddError(f"data folder {cfg.data!r} not found; make it with `python -m ladd.synth --model "
                        f"{cfg.teacher} --prompts FILE --out {cfg.data or 'DIR'}`")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="LADD: distil an SD3-style teacher into a few-step student.")
    parser.add_argument("config", nargs="?", help="TOML config, e.g. configs/ladd-shapes.toml (default: the "
                                                  "defaults of ladd.config.LaddConfig)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. iterations=100 student.lr=1e-5")
    args = parser.parse_args(argv)
    if args.config and "=" in args.config:  # only overrides were given
        args.overrides, args.config = [args.config, *args.overrides], None
    cfg = load_config(args.config, args.overrides)
    resolve_paths(cfg)
    train(cfg)
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
