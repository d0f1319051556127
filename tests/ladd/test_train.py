"""LADD training on the smoke zoo: what one iteration touches, the whole CLI run, exact resume, two processes."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from ladd.config import load_config
from ladd.data import LatentBuckets
from ladd.features import TeacherFeatures
from ladd.paths import CONFIGS_DIR, REPO_ROOT
from ladd.pipelines import load_pipeline
from ladd.train import (
    TrainingError,
    assemble_training,
    borrowed_text,
    build_discriminator,
    build_training,
    init_student,
    ladd_iteration,
    load_teacher,
    main,
    split_parts,
)

SMOKE_CONFIG = CONFIGS_DIR / "ladd-smoke.toml"


def smoke_args(teacher, latents, out, *extra):
    return [str(SMOKE_CONFIG), f"teacher={json.dumps(str(teacher))}", f"data={json.dumps(str(latents))}",
            f"out={json.dumps(str(out))}", *extra]


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_iteration_updates_student_and_heads_but_never_the_teacher(smoke_teacher, smoke_latents):
    cfg = load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}", "student.switch_at=0",
                                      "student.lr=1e-3", "discriminator.lr=1e-3", "warmup=1"])
    torch.manual_seed(0)
    parts = build_training(cfg)
    teacher, student, disc = parts["teacher"], parts["student"], parts["disc"]
    teacher_before, student_before, disc_before = snapshot(teacher), snapshot(student), snapshot(disc)
    models, optimizers = split_parts(parts)
    batch = LatentBuckets(smoke_latents).batch(0, 4, seed=0)
    stats = ladd_iteration(0, batch, models, optimizers, cfg, Accelerator(cpu=True))
    assert stats["g_grad_norm"] > 0 and stats["d_grad_norm"] > 0 and not stats["skipped"]
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in student_before.items())
    assert any(not torch.equal(v, disc.state_dict()[k]) for k, v in disc_before.items())


def test_models_built_in_memory_train_through_assemble_training(smoke_teacher, smoke_latents):
    """What scripts/full_size_cost.py relies on: a teacher not loaded from cfg's folder, and a guided target
    refused without the empty prompt's embeddings."""
    teacher = load_teacher(str(smoke_teacher))
    guided = load_config(SMOKE_CONFIG, ["distill.weight=0.2", "distill.guidance_scale=4.0"])
    with pytest.raises(TrainingError, match="empty prompt"):
        assemble_training(guided, teacher, init_student(guided, teacher))
    cfg = load_config(SMOKE_CONFIG, ["teacher='/nonexistent'", "student.switch_at=0"])
    parts = assemble_training(cfg, teacher, init_student(cfg, teacher))
    assert parts["student"] is not teacher and parts["teacher"] is teacher
    stats = ladd_iteration(0, LatentBuckets(smoke_latents).batch(0, 2, seed=0), *split_parts(parts), cfg,
                           Accelerator(cpu=True))
    assert stats["g_grad_norm"] > 0 and not stats["skipped"]


def test_unconditional_embeddings_are_the_pipelines_negative_prompt(smoke_teacher, smoke_latents):
    from ladd.train import unconditional_embeddings

    cfg = load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}", f"data={json.dumps(str(smoke_latents))}"])
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
        cfg = load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}",
                                          f"data={json.dumps(str(smoke_latents))}", "distill.weight=1.0",
                                          f"distill.guidance_scale={scale}"])
        torch.manual_seed(0)
        parts = build_training(cfg)
        assert (parts["unconditional"] is None) == (scale == 1.0)
        models, optimizers = split_parts(parts)
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
        cfg = load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}", "student.switch_at=0",
                                          f"discriminator.mismatch_weight={weight}", "warmup=1"])
        torch.manual_seed(0)
        parts = build_training(cfg)
        teacher_before = snapshot(parts["teacher"])
        torch.manual_seed(1)
        stats = ladd_iteration(0, batch, *split_parts(parts), cfg, Accelerator(cpu=True))
        assert all(torch.equal(v, parts["teacher"].state_dict()[k]) for k, v in teacher_before.items())
        assert (stats["mismatch"] > 0) == (weight > 0) and not stats["skipped"]
        after[weight] = snapshot(parts["student"]), snapshot(parts["disc"]), stats
    (student_off, disc_off, off), (student_on, disc_on, on) = after[0.0], after[1.0]
    assert all(torch.equal(v, student_on[k]) for k, v in student_off.items())
    assert off["g_loss"] == on["g_loss"] and on["d_loss"] > off["d_loss"]
    assert any(not torch.equal(v, disc_on[k]) for k, v in disc_off.items())


def test_paired_loss_starts_the_student_at_t_1_from_the_teachers_own_noise(smoke_teacher, smoke_latents):
    """paired.weight > 0: a student input at t = 1 is the noise the teacher drew that latent from (stored by
    ladd.synth), so x0_hat can be compared with x0; off, the input is fresh noise and the term is zero."""
    batch = LatentBuckets(smoke_latents).batch(0, 4, seed=0)
    for weight in (0.0, 1.0):
        cfg = load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}", "student.switch_at=0",
                                          "student.probs=[1.0, 0.0, 0.0, 0.0]", f"paired.weight={weight}"])
        torch.manual_seed(0)
        parts = build_training(cfg)
        inputs = []
        parts["student"].register_forward_pre_hook(
            lambda module, args, kwargs: inputs.append(kwargs["hidden_states"].detach().clone()), with_kwargs=True)
        stats = ladd_iteration(0, batch, *split_parts(parts), cfg, Accelerator(cpu=True))
        assert torch.equal(inputs[0], batch["noise"]) == (weight > 0)
        assert (stats["paired"] > 0) == (weight > 0) and not stats["skipped"]


def test_guided_teacher_velocity_is_cfg_of_the_two_branches(smoke_teacher, smoke_latents):
    from ladd.conditioning import predict_velocity
    from ladd.train import guided_teacher_velocity, unconditional_embeddings

    cfg = load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}", f"data={json.dumps(str(smoke_latents))}"])
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


def test_cli_run_checkpoints_logs_and_exports_a_4_step_student(smoke_teacher, smoke_latents, tmp_path):
    teacher_digest = tree_digest(smoke_teacher)
    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "run")) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and rows[0].startswith("iteration,")
    assert tree_digest(smoke_teacher) == teacher_digest  # the teacher folder is never written

    pipe = load_pipeline(run / "pipeline")
    exported = load_file(str(run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))
    ema = load_file(str(run / "checkpoints" / "step-000006" / "ema.safetensors"))
    teacher = load_file(str(smoke_teacher / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(exported[k], ema[k]) for k in ema)  # the export is the student's EMA ...
    assert any(not torch.equal(exported[k], teacher[k]) for k in teacher)  # ... not the teacher
    pipe.scheduler.set_timesteps(4)
    assert pipe.scheduler.sigmas.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert pipe.scheduler.config.stochastic_sampling
    defaults = json.loads((run / "pipeline" / "sampling_defaults.json").read_text())
    assert defaults["num_inference_steps"] == 4 and defaults["guidance_scale"] == 0.0


def test_checkpoint_loads_as_a_sampling_pipeline(smoke_teacher, smoke_latents, tmp_path):
    from ladd.checkpoint import load_student_pipeline

    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "run", "iterations=3")) == 0
    pipe = load_student_pipeline(tmp_path / "run" / "checkpoints" / "step-000003")
    image = pipe("a red circle", num_inference_steps=4, guidance_scale=0.0, max_sequence_length=0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_exporting_the_last_checkpoint_gives_the_runs_own_export(smoke_teacher, smoke_latents, tmp_path):
    from ladd.checkpoint import export_checkpoint

    run = tmp_path / "run"
    assert main(smoke_args(smoke_teacher, smoke_latents, run, "iterations=3")) == 0
    path, linked = export_checkpoint(run / "checkpoints" / "step-000003", tmp_path / "chosen", link_teacher=True)
    assert (path / "transformer").is_dir() and "vae" in linked and (path / "vae").is_symlink()
    exported = load_file(str(path / "transformer" / "diffusion_pytorch_model.safetensors"))
    final = load_file(str(run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)
    assert json.loads((path / "sampling_defaults.json").read_text())["num_inference_steps"] == 4


def test_kill_and_resume_matches_an_uninterrupted_run(smoke_teacher, smoke_latents, tmp_path):
    iterations = ["iterations=40", "checkpoint_every=4", "keep_checkpoints=100", "log_every=100"]
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


def test_heads_can_start_from_another_runs_checkpoint(smoke_teacher, smoke_latents, tmp_path, capsys):
    """For a shallower student of the same teacher: the heads judge the teacher's features, not the student's."""
    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "run", "iterations=3")) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000003"
    trained = load_file(str(checkpoint / "model_1.safetensors"))
    cfg = load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}",
                                      f"discriminator.init_from={json.dumps(str(checkpoint))}"])
    disc = build_training(cfg)["disc"]
    assert disc.state_dict().keys() == trained.keys()
    assert all(torch.equal(disc.state_dict()[k], trained[k]) for k in trained)
    fresh = build_training(load_config(SMOKE_CONFIG, [f"teacher={json.dumps(str(smoke_teacher))}"]))["disc"]
    assert any(not torch.equal(fresh.state_dict()[k], trained[k]) for k in trained)
    capsys.readouterr()
    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "wider", "discriminator.hidden=32",
                           f"discriminator.init_from={json.dumps(str(checkpoint))}")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the loading progress bars
    assert last.startswith("error: discriminator.init_from") and "do not fit" in last


def test_non_finite_iterations_are_skipped_then_stop_the_run(smoke_teacher, smoke_latents, tmp_path, capsys):
    # a learning rate of 1e30 blows the student up within a couple of iterations
    args = smoke_args(smoke_teacher, smoke_latents, tmp_path / "nan", "student.lr=1e30", "max_grad_norm=1e38",
                      "max_skipped=1", "iterations=30", "checkpoint_every=100")
    assert main(args) == 2
    assert "non-finite" in capsys.readouterr().err
    log = (tmp_path / "nan" / "metrics.csv").read_text().splitlines()
    assert any(row.endswith(",1") for row in log[1:])  # skipped iterations are logged


@pytest.mark.parametrize(
    "override,message",
    [("teacher=\"/nonexistent\"", "not a diffusers pipeline"), ("teacher=\"someone/uncached\"", "huggingface-cli login"),
     ("data=\"/nonexistent\"", "ladd.synth"),
     ("iterations=0", "positive"), ("discriminator.mismatch_weight=-1", "mismatch_weight"),
     ("paired.weight=-1", "paired.weight"), ("student.probs=[0.5, 0.5]", "probs"), ("nope=1", "unknown config key"),
     ("discriminator.init_from=\"/nonexistent\"", "holds no heads")],
)
def test_bad_configs_are_one_line_errors(smoke_teacher, smoke_latents, tmp_path, capsys, override, message):
    assert main(smoke_args(smoke_teacher, smoke_latents, tmp_path / "bad", override)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_paired_loss_on_data_without_the_noise_is_a_one_line_error(smoke_teacher, tmp_path, capsys):
    from ladd.synth import main as synth_main

    data = tmp_path / "real"
    assert synth_main(["--model", str(smoke_teacher), "--out", str(data), "--num", "8", "--shard-size", "8",
                       "--source", "render"]) == 0
    capsys.readouterr()
    assert main(smoke_args(smoke_teacher, data, tmp_path / "run", "paired.weight=1.0")) == 2
    err = capsys.readouterr().err.strip()
    assert "--add-noise" in err and len(err.splitlines()) == 1


def test_two_cpu_processes_train_with_gloo(smoke_teacher, smoke_latents, tmp_path):
    """`accelerate launch --cpu` starts a single process in accelerate 1.x; `--multi_gpu` on a machine without GPUs
    starts torchrun workers that train as MULTI_CPU over gloo."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "ladd.train", *smoke_args(smoke_teacher, smoke_latents, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (MULTI_CPU, gloo)" in result.stdout
    checkpoint = out / "checkpoints" / "step-000006"
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
    assert (out / "pipeline" / "model_index.json").exists()


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
