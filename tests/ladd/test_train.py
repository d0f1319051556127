"""LADD training on the smoke zoo: what one iteration touches, the whole CLI run, exact resume, two processes."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import load_file

from ladd import losses
from ladd.cli import LaddError
from ladd.config import load_config
from ladd.data import LatentBuckets
from ladd.features import TeacherFeatures
from ladd.paths import CONFIGS_DIR, REPO_ROOT
from ladd.pipelines import load_pipeline
from ladd.train import (
    assemble_training,
    borrowed_text,
    build_discriminator,
    build_training,
    generator_step,
    init_student,
    ladd_iteration,
    load_teacher,
    main,
)
from tests.conftest import cli_exit_code

SMOKE_CONFIG = CONFIGS_DIR / "ladd-smoke.toml"


def smoke_args(teacher, latents, out, *extra):
    return [str(SMOKE_CONFIG), f"teacher={json.dumps(str(teacher))}", f"data={json.dumps(str(latents))}",
            f"out={json.dumps(str(out))}", *extra]


def smoke_config(teacher, latents, *extra):
    return load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(teacher))}", f"data={json.dumps(str(latents))}",
                                      *extra])


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_iteration_updates_student_and_heads_but_never_the_teacher(smoke_teacher, smoke_latents):
    cfg = smoke_config(smoke_teacher, smoke_latents, "student.switch_at=0", "student.lr=1e-3",
                       "discriminator.lr=1e-3", "warmup=1")
    torch.manual_seed(0)
    models, optimizers = build_training(cfg)
    teacher_before, student_before, disc_before = (snapshot(m) for m in (models.teacher, models.student,
                                                                         models.discriminator))
    batch = LatentBuckets(smoke_latents).batch(0, 4, seed=0)
    stats = ladd_iteration(0, batch, models, optimizers, cfg, Accelerator(cpu=True))
    assert stats["g_grad_norm"] > 0 and stats["d_grad_norm"] > 0 and not stats["g_skipped"] | stats["d_skipped"]
    assert all(torch.equal(v, models.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None and not p.requires_grad for p in models.teacher.parameters())
    assert any(not torch.equal(v, models.student.state_dict()[k]) for k, v in student_before.items())
    assert any(not torch.equal(v, models.discriminator.state_dict()[k]) for k, v in disc_before.items())
    assert all(p.requires_grad for p in models.discriminator.parameters())  # unfrozen after the G step


def test_the_generator_step_computes_no_gradient_for_the_heads(smoke_teacher, smoke_latents):
    """The heads' gradients in the G step would be thrown away; under DDP they would also be all-reduced first.
    They are never computed: no gradient reaches a head parameter during the G step, yet the student gets one."""
    cfg = smoke_config(smoke_teacher, smoke_latents, "student.switch_at=0")
    models, optimizers = build_training(cfg)
    accumulated = []
    for p in models.discriminator.parameters():
        p.register_post_accumulate_grad_hook(lambda p: accumulated.append(p))
    batch = LatentBuckets(smoke_latents).batch(0, 4, seed=0)
    x0 = batch["latents"]
    t_hat = torch.full((4,), 0.6)
    x0_hat = x0 + 0.1 * torch.randn_like(x0)
    x0_hat.requires_grad_()
    stats, fake_grids = generator_step(batch, x0_hat, (1 - 0.6) * x0_hat + 0.6 * torch.randn_like(x0), t_hat,
                                       models, optimizers, cfg, Accelerator(cpu=True))
    assert accumulated == [] and x0_hat.grad is not None and x0_hat.grad.abs().sum() > 0
    assert all(not g.requires_grad for g in fake_grids) and stats["g_grad_norm"] >= 0


def test_models_built_in_memory_train_through_assemble_training(smoke_teacher, smoke_latents):
    """What scripts/full_size_cost.py relies on: a teacher not loaded from cfg's folder, and a guided target
    refused without the empty prompt's embeddings."""
    teacher = load_teacher(str(smoke_teacher))
    guided = load_config(SMOKE_CONFIG, ["distill.weight=0.2", "distill.guidance_scale=4.0"])
    with pytest.raises(LaddError, match="empty prompt"):
        assemble_training(guided, teacher, init_student(guided, teacher))
    cfg = load_config(SMOKE_CONFIG, ["student.switch_at=0"])
    models, optimizers = assemble_training(cfg, teacher, init_student(cfg, teacher))
    assert models.student is not teacher and models.teacher is teacher
    stats = ladd_iteration(0, LatentBuckets(smoke_latents).batch(0, 2, seed=0), models, optimizers, cfg,
                           Accelerator(cpu=True))
    assert stats["g_grad_norm"] > 0 and not stats["g_skipped"]


def test_unconditional_embeddings_are_the_pipelines_negative_prompt(smoke_teacher, smoke_latents):
    from ladd.train import unconditional_embeddings

    cfg = smoke_config(smoke_teacher, smoke_latents)
    pipe = load_pipeline(smoke_teacher)
    length = json.loads((smoke_latents / "plan.json").read_text())["max_sequence_length"]
    _, negative, _, negative_pooled = pipe.encode_prompt("a red circle", None, None, do_classifier_free_guidance=True,
                                                         max_sequence_length=length)
    embeds, pooled = unconditional_embeddings(pipe, cfg)
    assert torch.allclose(embeds, negative, atol=1e-5) and torch.allclose(pooled, negative_pooled, atol=1e-5)
    assert embeds.shape[1] == LatentBuckets(smoke_latents).buckets[0]["prompt_embeds"].shape[1]


def test_guided_distillation_changes_only_the_target_not_the_adversarial_features(smoke_teacher, smoke_latents):
    """distill.guidance_scale > 1 adds one unconditional teacher forward for L_distill's target; the heads still see
    exactly the conditional features, so the adversarial loss of the same draw is unchanged."""
    batch = LatentBuckets(smoke_latents).batch(0, 4, seed=0)
    stats = {}
    for scale in (1.0, 4.0):
        cfg = smoke_config(smoke_teacher, smoke_latents, "distill.weight=1.0", f"distill.guidance_scale={scale}")
        torch.manual_seed(0)
        models, optimizers = build_training(cfg)
        assert (models.unconditional is None) == (scale == 1.0)
        torch.manual_seed(1)
        stats[scale] = ladd_iteration(0, batch, models, optimizers, cfg, Accelerator(cpu=True))
    assert stats[1.0]["g_loss"] == stats[4.0]["g_loss"]
    assert stats[4.0]["distill"] > 0 and stats[4.0]["distill"] != stats[1.0]["distill"]


def test_borrowed_text_is_the_neighbours_and_marks_a_prompt_drawn_twice():
    embeds = torch.stack([torch.full((3, 2), float(i)) for i in (0, 1, 1, 2)])
    batch = {"latents": torch.randn(4, 4, 2, 2), "prompt_embeds": embeds, "pooled_prompt_embeds": embeds[:, 0]}
    borrowed = borrowed_text(batch)
    assert torch.equal(borrowed["prompt_embeds"][:, 0, 0], torch.tensor([2.0, 0.0, 1.0, 1.0]))
    assert torch.equal(borrowed["pooled_prompt_embeds"], batch["pooled_prompt_embeds"].roll(1, 0))
    assert borrowed["differs"].tolist() == [True, True, False, True]
    assert borrowed["latents"] is batch["latents"]  # the images stay: only their text is swapped


def test_matching_aware_term_trains_only_the_heads(smoke_teacher, smoke_latents):
    """discriminator.mismatch_weight > 0 adds (real latents, a neighbour's prompt) as fakes to the D step: the
    student's update of the same draw is unchanged, the heads' is not, and the teacher never changes."""
    batch = LatentBuckets(smoke_latents).batch(0, 4, seed=0)
    after = {}
    for weight in (0.0, 1.0):
        cfg = smoke_config(smoke_teacher, smoke_latents, "student.switch_at=0",
                           f"discriminator.mismatch_weight={weight}", "warmup=1")
        torch.manual_seed(0)
        models, optimizers = build_training(cfg)
        teacher_before = snapshot(models.teacher)
        torch.manual_seed(1)
        stats = ladd_iteration(0, batch, models, optimizers, cfg, Accelerator(cpu=True))
        assert all(torch.equal(v, models.teacher.state_dict()[k]) for k, v in teacher_before.items())
        assert (stats["mismatch"] > 0) == (weight > 0) and not stats["d_skipped"]
        after[weight] = snapshot(models.student), snapshot(models.discriminator), stats
    (student_off, disc_off, off), (student_on, disc_on, on) = after[0.0], after[1.0]
    assert all(torch.equal(v, student_on[k]) for k, v in student_off.items())
    assert off["g_loss"] == on["g_loss"] and on["d_loss"] > off["d_loss"]
    assert any(not torch.equal(v, disc_on[k]) for k, v in disc_off.items())


def test_guided_teacher_velocity_is_cfg_of_the_two_branches(smoke_teacher, smoke_latents):
    from ladd.conditioning import predict_velocity
    from ladd.train import guided_teacher_velocity, unconditional_embeddings

    cfg = smoke_config(smoke_teacher, smoke_latents)
    pipe = load_pipeline(smoke_teacher)
    teacher, unconditional = pipe.transformer, unconditional_embeddings(pipe, cfg)
    batch = LatentBuckets(smoke_latents).batch(0, 3, seed=0)
    noisy, t_hat = torch.randn_like(batch["latents"]), torch.tensor([0.9, 0.5, 0.2])
    with torch.no_grad():
        cond = predict_velocity(teacher, noisy, t_hat, batch["prompt_embeds"], batch["pooled_prompt_embeds"])
        uncond = predict_velocity(teacher, noisy, t_hat, unconditional[0].expand(3, -1, -1),
                                  unconditional[1].expand(3, -1))
    guided = guided_teacher_velocity(teacher, noisy, t_hat, batch, cond, unconditional, 3.0)
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the empty prompt really is another condition


def test_generator_gradient_flows_through_the_teacher_into_the_student(smoke_teacher, smoke_latents):
    """Only the adversarial loss, no distillation: the student's gradient can only come through the teacher."""
    cfg = load_config(SMOKE_CONFIG)
    teacher = load_teacher(str(smoke_teacher))
    features = TeacherFeatures(teacher)
    disc = build_discriminator(cfg, features, teacher)
    batch = LatentBuckets(smoke_latents).batch(0, 2, seed=0)
    x0 = torch.randn_like(batch["latents"]).requires_grad_()
    with features.capture():
        teacher(hidden_states=x0, encoder_hidden_states=batch["prompt_embeds"],
                pooled_projections=batch["pooled_prompt_embeds"], timestep=torch.full((2,), 700.0))
    logits = disc(features.grids(*x0.shape[-2:]), torch.full((2,), 0.7), batch["pooled_prompt_embeds"])
    torch.stack([l.mean() for l in logits]).sum().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0


def stock_sigmas(folder: Path, steps: int) -> list[float]:
    """The sigmas stock diffusers samples an exported folder at, with the sigmas the folder records."""
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    table = json.loads((folder / "sampling_defaults.json").read_text())["consistency_sigmas"]
    pipe("a red circle", sigmas=table[str(steps)], guidance_scale=0.0, max_sequence_length=0, height=32, width=32)
    return pipe.scheduler.sigmas[:-1].tolist()


def test_cli_run_checkpoints_logs_and_exports_a_student_stock_diffusers_samples(smoke_teacher, smoke_latents,
                                                                                tmp_path):
    teacher_digest = tree_digest(smoke_teacher)
    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "run")) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and rows[0].startswith("iteration,")
    assert tree_digest(smoke_teacher) == teacher_digest  # the teacher folder is never written

    exported = load_file(str(run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))
    ema = load_file(str(run / "checkpoints" / "step-000006" / "ema.safetensors"))
    teacher = load_file(str(smoke_teacher / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(exported[k], ema[k]) for k in ema)  # the export is the student's EMA ...
    assert any(not torch.equal(exported[k], teacher[k]) for k in teacher)  # ... not the teacher
    for steps, sigmas in ((1, [1.0]), (2, [1.0, 0.5]), (4, [1.0, 0.75, 0.5, 0.25])):
        assert stock_sigmas(run / "pipeline", steps) == pytest.approx(sigmas)
    defaults = json.loads((run / "pipeline" / "sampling_defaults.json").read_text())
    assert defaults["num_inference_steps"] == 4 and defaults["guidance_scale"] == 0.0
    assert json.loads((run / "config.json").read_text())["student"]["timesteps"] == [1.0, 0.75, 0.5, 0.25]


def test_the_configured_timesteps_reach_the_exported_sampler(smoke_teacher, smoke_latents, tmp_path):
    """Trained on {1, .5}: the student draws only those, and stock diffusers samples it at [1, .5] for 2 steps."""
    run = tmp_path / "run"
    assert main(smoke_args(smoke_teacher, smoke_latents, run, "iterations=2", "student.timesteps=[1.0, 0.5]",
                           "student.warmup_probs=[0.0, 1.0]", "student.probs=[0.5, 0.5]")) == 0
    assert stock_sigmas(run / "pipeline", 2) == pytest.approx([1.0, 0.5])
    table = json.loads((run / "pipeline" / "sampling_defaults.json").read_text())["consistency_sigmas"]
    assert table == {"1": [1.0], "2": [1.0, 0.5]}
    checkpoint_table = json.loads((run / "checkpoints" / "step-000002" / "sampling_defaults.json").read_text())
    assert checkpoint_table["consistency_sigmas"] == table  # `bench.run --model CHECKPOINT` samples the same way


def test_checkpoint_loads_as_a_sampling_pipeline(smoke_teacher, smoke_latents, tmp_path):
    from ladd.checkpoint import load_student_pipeline

    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "run", "iterations=3")) == 0
    pipe = load_student_pipeline(tmp_path / "run" / "checkpoints" / "step-000003")
    image = pipe("a red circle", sigmas=[1.0, 0.5], guidance_scale=0.0, max_sequence_length=0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64) and pipe.scheduler.sigmas.tolist() == [1.0, 0.5, 0.0]


def test_exporting_the_last_checkpoint_gives_the_runs_own_export(smoke_teacher, smoke_latents, tmp_path):
    from ladd.export import main as export_main

    run = tmp_path / "run"
    assert main(smoke_args(smoke_teacher, smoke_latents, run, "iterations=3")) == 0
    assert export_main([str(run / "checkpoints" / "step-000003"), "--out", str(tmp_path / "chosen"),
                        "--link-teacher"]) == 0
    path = tmp_path / "chosen"
    assert (path / "transformer").is_dir() and (path / "vae").is_symlink()
    exported = load_file(str(path / "transformer" / "diffusion_pytorch_model.safetensors"))
    final = load_file(str(run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)
    assert json.loads((path / "sampling_defaults.json").read_text())["num_inference_steps"] == 4


def test_a_float16_export_is_half_the_size_and_loads_as_float32_in_stock_diffusers(smoke_teacher, smoke_latents,
                                                                                   tmp_path):
    from diffusers import StableDiffusion3Pipeline

    from ladd.export import main as export_main

    run = tmp_path / "run"
    assert main(smoke_args(smoke_teacher, smoke_latents, run, "iterations=1")) == 0
    checkpoint = str(run / "checkpoints" / "step-000001")
    assert export_main([checkpoint, "--out", str(tmp_path / "fp16"), "--weights-dtype", "float16"]) == 0
    weights = tmp_path / "fp16" / "transformer" / "diffusion_pytorch_model.safetensors"
    full = run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"
    assert {t.dtype for t in load_file(str(weights)).values()} == {torch.float16}
    assert weights.stat().st_size < 0.6 * full.stat().st_size
    stored, original = (StableDiffusion3Pipeline.from_pretrained(p).transformer
                        for p in (tmp_path / "fp16", run / "pipeline"))
    assert stored.dtype == torch.float32
    for (name, a), (_, b) in zip(stored.state_dict().items(), original.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name


def test_re_exporting_a_folder_rewrites_its_sampler_and_keeps_its_weights(smoke_teacher, smoke_latents, tmp_path,
                                                                          capsys):
    """A student exported before the fix (terminal-stretched scheduler, no sigma table), re-exported in place."""
    from ladd.export import main as export_main

    run = tmp_path / "run"
    assert main(smoke_args(smoke_teacher, smoke_latents, run, "iterations=1")) == 0
    old = run / "pipeline"
    config = json.loads((old / "scheduler" / "scheduler_config.json").read_text())
    (old / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "shift_terminal": 0.25}))
    (old / "sampling_defaults.json").write_text(json.dumps({"num_inference_steps": 4, "guidance_scale": 0.0}))
    weights = tree_digest(old / "transformer")["diffusion_pytorch_model.safetensors"]
    capsys.readouterr()
    assert cli_exit_code(export_main, [str(old), "--out", str(old)]) == 2
    assert "--teacher is required" in capsys.readouterr().err
    assert export_main([str(old), "--teacher", str(smoke_teacher), "--out", str(old)]) == 0
    assert stock_sigmas(old, 2) == pytest.approx([1.0, 0.5])
    assert tree_digest(old / "transformer")["diffusion_pytorch_model.safetensors"] == weights


def test_kill_and_resume_matches_an_uninterrupted_run(smoke_teacher, smoke_latents, tmp_path):
    iterations = ["iterations=40", "checkpoint_every=4", "keep_checkpoints=100", "log_every=1"]
    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "straight", *iterations)) == 0

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "ladd.train", *smoke_args(smoke_teacher, smoke_latents, killed, *iterations)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-000008" / "ladd_checkpoint.json").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "step-000040").exists()  # really killed mid-run
    assert main(smoke_args(smoke_teacher, smoke_latents, killed, *iterations)) == 0

    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-000040" / name))
        b = load_file(str(killed / "checkpoints" / "step-000040" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # one log row per iteration: those the killed run logged past its last checkpoint are not repeated
    assert pd.read_csv(killed / "metrics.csv")["iteration"].tolist() == list(range(40))


def test_non_finite_iterations_are_skipped_then_stop_the_run(smoke_teacher, smoke_latents, tmp_path, capsys):
    # a learning rate of 1e30 blows the student up within a couple of iterations
    args = smoke_args(smoke_teacher, smoke_latents, tmp_path / "nan", "student.lr=1e30", "max_grad_norm=1e38",
                      "max_skipped=1", "iterations=30", "checkpoint_every=100")
    assert cli_exit_code(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "non-finite" in err[-1]
    log = (tmp_path / "nan" / "metrics.csv").read_text().splitlines()
    assert any(row.endswith(",1") for row in log[1:])  # skipped iterations are logged


def test_the_ema_follows_every_student_update_even_when_the_heads_step_is_skipped(
        smoke_teacher, smoke_latents, tmp_path, monkeypatch):
    """A non-finite discriminator loss skips only the heads' step: the student still stepped, so its EMA must too."""
    d_loss, g_loss, fake_term = losses.ADVERSARIAL_LOSSES["hinge"]
    monkeypatch.setitem(losses.ADVERSARIAL_LOSSES, "hinge",
                        (lambda real, fake: d_loss(real, fake) * float("nan"), g_loss, fake_term))
    run = tmp_path / "run"
    assert main(smoke_args(smoke_teacher, smoke_latents, run, "iterations=3", "max_skipped=5")) == 0
    record = json.loads((run / "checkpoints" / "step-000003" / "ladd_checkpoint.json").read_text())
    assert record["ema_optimization_step"] == 3
    log = pd.read_csv(run / "metrics.csv")
    assert log["skipped"].tolist() == [1, 1, 1] and log["g_grad_norm"].notna().all()


@pytest.mark.parametrize(
    "override,message",
    [("teacher=\"/nonexistent\"", "not a diffusers pipeline"), ("teacher=\"someone/uncached\"", "huggingface-cli login"),
     ("data=\"/nonexistent\"", "ladd.synth"), ("iterations=0", "positive"),
     ("discriminator.mismatch_weight=-1", "mismatch_weight"), ("student.probs=[0.5, 0.5]", "probs"),
     ("nope=1", "unknown config key 'nope' (valid here: adam_betas"), ("student.lr=\"fast\"", "student.lr must be"),
     ("mixed_precision=\"fp16\"", "'fp16' is not supported"), ("student.timesteps=[0.9, 0.5]", "start at 1.0")],
)
def test_bad_configs_are_one_line_errors(smoke_teacher, smoke_latents, tmp_path, capsys, override, message):
    assert cli_exit_code(main, smoke_args(smoke_teacher, smoke_latents, tmp_path / "bad", override)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def ddp_command(teacher, latents, out, *extra):
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "ladd.train", *smoke_args(teacher, latents, out, *extra)]


@pytest.mark.slow
def test_two_cpu_processes_train_with_gloo_on_the_single_process_learning_rates(smoke_teacher, smoke_latents,
                                                                                tmp_path):
    """`accelerate launch --multi_gpu` on a machine without GPUs starts torchrun workers that train as MULTI_CPU
    over gloo. The learning-rate warm-up advances once per iteration, as in one process (accelerate would step a
    prepared schedule once per process)."""
    warmup = ["warmup=4", "iterations=5"]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(ddp_command(smoke_teacher, smoke_latents, out, *warmup), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (MULTI_CPU, gloo)" in result.stdout
    checkpoint = out / "checkpoints" / "step-000005"
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
    assert (out / "pipeline" / "model_index.json").exists()
    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "single", *warmup)) == 0
    two, one = pd.read_csv(out / "metrics.csv"), pd.read_csv(tmp_path / "single" / "metrics.csv")
    assert one["lr"].tolist() == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4])
    assert two["lr"].tolist() == pytest.approx(one["lr"].tolist())


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_links_shared_components_and_re_export_never_writes_into_the_teacher(
        smoke_teacher, smoke_latents, tmp_path):
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(smoke_teacher, teacher)
    before = tree_digest(teacher)
    export = tmp_path / "student"
    args = smoke_args(teacher, smoke_latents, tmp_path / "run", "checkpoint_every=1", "export_link_teacher=true",
                      f"export={json.dumps(str(export))}")
    assert main([*args, "iterations=1"]) == 0
    assert {"vae", "text_encoder", "text_encoder_2"} <= {p.name for p in export.iterdir() if p.is_symlink()}
    assert not (export / "transformer").is_symlink()
    first = tree_digest(export / "transformer")
    # a longer run exports again over the linked folder: the links must be replaced, not written through
    assert main([*args, "iterations=2"]) == 0
    assert tree_digest(teacher) == before
    assert (export / "vae").is_symlink() and tree_digest(export / "transformer") != first
    assert not export.with_name("student.partial").exists() and not export.with_name("student.previous").exists()
    pipe = load_pipeline(export)  # still loads on its own
    assert pipe.transformer is not None and pipe.vae is not None
