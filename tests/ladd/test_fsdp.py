"""LADD under FSDP2 (`ladd.sharding`) on two CPU processes over gloo: the same numbers as one process, exact
kill-and-resume, resume on another world size, an export stock diffusers loads, a teacher that never changes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from ladd.checkpoint import load_checkpoint_student
from ladd.data import LatentBuckets
from ladd.paths import REPO_ROOT
from ladd.sharding import SHARDED_DIR, launcher_plugin, replicate_heads, shard_models
from ladd.train import assemble_training, freeze, init_student, ladd_iteration, main
from tests.conftest import cli_exit_code
from tests.ladd.test_train import ddp_command, smoke_args, smoke_config, tree_digest

FSDP_CONFIG = REPO_ROOT / "configs" / "accelerate" / "fsdp-1node.yaml"
ITERATIONS = 4
LR = 1e-3
# Both processes take the same batch and noise, so they average two equal gradients and FSDP must reproduce one
# process's numbers up to summation order (gradient checkpointing, the norm over shards). Measured over 4 iterations
# at lr 1e-3: fp32 losses within 6e-6 and student weights within 8e-8; head weights within 3.4e-4, because Adam
# (beta1 = 0) turns near-cancelling bias gradients into lr-sized steps whatever their rounding; bf16 (FSDP's bf16
# parameter copies against autocast's casts of fp32 weights) within 2.4e-4, and d_loss, itself a bf16 number near 2,
# within one bf16 step there (2**-6). Casting forward inputs to bf16 (what `compute_policy` avoids) moves them 2e-3.
LOSS_TOLERANCE = {"no": 5e-5, "bf16": 1e-3}
BF16_STEP_AT_2 = 2.0 ** -6
WEIGHT_TOLERANCE = {"student": 1e-6, "discriminator": LR}  # fp32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def three_block_teacher(smoke_teacher: Path) -> SD3Transformer2DModel:
    """The smoke teacher's shape with three blocks (random weights, the same in every process): the smoke teacher
    has one, and an inner block is the case where a hooked output also feeds the next block."""
    config = json.loads((smoke_teacher / "transformer" / "config.json").read_text())
    torch.manual_seed(0)
    return freeze(SD3Transformer2DModel.from_config({**config, "num_layers": 3}))


def same_batch_run(smoke_teacher, smoke_latents, mixed_precision: str, sharded: bool) -> dict:
    """ITERATIONS LADD iterations on fixed batches and noise; the losses and the full student, heads and teacher."""
    overrides = ["student.switch_at=0", f"student.lr={LR}", f"discriminator.lr={LR}", "warmup=1",
                 f"mixed_precision={json.dumps(mixed_precision)}", f"gradient_checkpointing={str(sharded).lower()}"]
    cfg = smoke_config(smoke_teacher, smoke_latents, *overrides)
    AcceleratorState._reset_state()  # accelerate keeps one precision per process; this process runs both
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    teacher = three_block_teacher(smoke_teacher)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    shard = shard_models(mixed_precision, launcher_plugin()) if sharded else None
    models, optimizers = assemble_training(cfg, teacher, init_student(cfg, teacher), shard=shard)
    if sharded:  # as ladd.train does
        models.discriminator = replicate_heads(models.discriminator, accelerator.device)
    data = LatentBuckets(smoke_latents)
    losses = []
    for i in range(ITERATIONS):
        torch.manual_seed(100 + i)
        stats = ladd_iteration(i, data.batch(i, 2, seed=0), models, optimizers, cfg, accelerator)
        losses.append({k: stats[k] for k in ("g_loss", "d_loss", "real_logit", "fake_logit", "g_grad_norm")})
    full = StateDictOptions(full_state_dict=True)
    AcceleratorState._reset_state()
    return {"losses": losses, "teacher_before": teacher_before,
            **{name: get_model_state_dict(getattr(models, name), options=full) if sharded else
               getattr(models, name).state_dict() for name in ("student", "discriminator", "teacher")}}


def same_batch_worker(rank: int, world: int, port: int, smoke_teacher, smoke_latents, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    for mixed_precision in ("no", "bf16"):
        result = same_batch_run(smoke_teacher, smoke_latents, mixed_precision, sharded=True)
        if rank == 0:
            torch.save(result, out / f"fsdp-{mixed_precision}.pt")


@pytest.mark.slow
def test_two_fsdp_processes_on_the_same_batch_match_one_process(smoke_teacher, smoke_latents, tmp_path):
    """Both processes take the same batch and noise: the sharded run (with gradient checkpointing, so the teacher's
    feature hooks meet sharding and recomputation) must give one unsharded process's losses and weights."""
    mp.spawn(same_batch_worker, args=(2, free_port(), smoke_teacher, smoke_latents, tmp_path), nprocs=2)
    for mixed_precision, tolerance in LOSS_TOLERANCE.items():
        sharded = torch.load(tmp_path / f"fsdp-{mixed_precision}.pt")
        single = same_batch_run(smoke_teacher, smoke_latents, mixed_precision, sharded=False)
        for i, (got, want) in enumerate(zip(sharded["losses"], single["losses"])):
            for key, value in want.items():
                allowed = BF16_STEP_AT_2 if (key, mixed_precision) == ("d_loss", "bf16") else tolerance
                assert abs(got[key] - value) <= allowed, (mixed_precision, i, key, got[key], value)
        # the frozen teacher, sharded and trained through, is exactly what it was
        assert all(torch.equal(sharded["teacher"][k], v) for k, v in sharded["teacher_before"].items())
        if mixed_precision == "no":
            for name, atol in WEIGHT_TOLERANCE.items():
                assert sharded[name].keys() == single[name].keys()
                for key, value in single[name].items():
                    torch.testing.assert_close(sharded[name][key], value, rtol=0, atol=atol, msg=f"{name} {key}")


# --- ladd.train launched with the FSDP accelerate config ----------------------------------------------------------

# every opt-in term on: R1 differentiates the heads twice, the matching-aware term and the guided target run the
# sharded teacher twice more
RUN = ["iterations=16", "checkpoint_every=4", "keep_checkpoints=100", "log_every=1", "discriminator.r1_weight=0.1",
       "discriminator.r1_every=2", "discriminator.mismatch_weight=1.0", "distill.weight=0.2",
       "distill.guidance_scale=4.0"]
COMPARED = 6  # iterations compared with DDP


def fsdp_command(teacher, latents, out, *extra):
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG), "--num_processes",
            "2", "-m", "ladd.train", *smoke_args(teacher, latents, out, *extra)]


def launch(command) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def sharded_contents(checkpoint: Path, scratch: Path) -> dict:
    """Everything a sharded checkpoint's DCP folder holds (models, optimisers, EMA), as one torch.save dict."""
    dcp_to_torch_save(checkpoint / SHARDED_DIR, scratch)
    return torch.load(scratch, weights_only=False)


def assert_same_tree(a, b, where="") -> None:
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def fsdp_run(smoke_teacher, smoke_latents, tmp_path_factory) -> Path:
    """The smoke config over two FSDP processes, launched with the shipped accelerate config (CPUs, gloo)."""
    out = tmp_path_factory.mktemp("fsdp") / "straight"
    teacher_digest = tree_digest(smoke_teacher)
    result = launch(fsdp_command(smoke_teacher, smoke_latents, out, *RUN))
    assert "2 processes (MULTI_CPU, gloo), sharded with FSDP2" in result.stdout
    assert tree_digest(smoke_teacher) == teacher_digest  # the teacher folder is never written
    return out


@pytest.mark.slow
def test_fsdp_losses_match_ddp_and_the_export_is_an_ordinary_student(fsdp_run, smoke_teacher, smoke_latents,
                                                                    tmp_path):
    """Each process draws its own batch: FSDP's reduce-scatter must average them as DDP's all-reduce does. Measured
    with every opt-in term on: within 2.4e-7 over eight iterations (summation order). With the adversarial loss alone
    Adam amplifies such rounding (1e-5 by the sixth iteration), which the other terms' gradients keep in check."""
    ddp = tmp_path / "ddp"
    launch(ddp_command(smoke_teacher, smoke_latents, ddp, *RUN[3:], f"iterations={COMPARED}"))
    sharded, replicated = pd.read_csv(fsdp_run / "metrics.csv"), pd.read_csv(ddp / "metrics.csv")
    for key in ("g_loss", "d_loss", "real_logit", "fake_logit", "g_grad_norm", "d_grad_norm", "lr"):
        assert sharded[key][:COMPARED].tolist() == pytest.approx(replicated[key][:COMPARED].tolist(), abs=1e-5), key

    checkpoint = fsdp_run / "checkpoints" / "step-000016"
    record = json.loads((checkpoint / "ladd_checkpoint.json").read_text())
    assert record["sharded"] and record["num_processes"] == 2
    assert sorted(p.name for p in (checkpoint / SHARDED_DIR).iterdir()) == [".metadata", "__0_0.distcp",
                                                                            "__1_0.distcp"]
    # the export (EMA gathered on rank 0) is the checkpoint's EMA as one process reads it back, not the teacher
    exported = load_file(str(fsdp_run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))
    ema, _, _ = load_checkpoint_student(checkpoint)
    teacher = load_file(str(smoke_teacher / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert exported.keys() == ema.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in ema.state_dict().items())
    assert any(not torch.equal(exported[k], teacher[k]) for k in teacher)
    pipe = StableDiffusion3Pipeline.from_pretrained(fsdp_run / "pipeline", text_encoder_3=None, tokenizer_3=None)
    sigmas = json.loads((fsdp_run / "pipeline" / "sampling_defaults.json").read_text())["consistency_sigmas"]["2"]
    image = pipe("a red circle", sigmas=sigmas, guidance_scale=0.0, max_sequence_length=0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64) and pipe.scheduler.sigmas.tolist() == [1.0, 0.5, 0.0]


def worker_pids(launcher: int) -> list[int]:
    """The launcher's child processes (torchrun starts each worker in its own session)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == launcher:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.slow
def test_fsdp_kill_and_resume_matches_an_uninterrupted_run(fsdp_run, smoke_teacher, smoke_latents, tmp_path):
    killed = tmp_path / "killed"
    process = subprocess.Popen(fsdp_command(smoke_teacher, smoke_latents, killed, *RUN), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-000008" / "ladd_checkpoint.json").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.01)
    for pid in [*worker_pids(process.pid), process.pid]:  # every process dies at once, as in a crash
        os.kill(pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "step-000016").exists()  # really killed mid-run
    launch(fsdp_command(smoke_teacher, smoke_latents, killed, *RUN))

    step = Path("checkpoints") / "step-000016"
    assert_same_tree(sharded_contents(fsdp_run / step, tmp_path / "straight.pt"),
                     sharded_contents(killed / step, tmp_path / "killed.pt"))
    straight, resumed = load_file(str(fsdp_run / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors")), \
        load_file(str(killed / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_two_process_checkpoint_resumes_in_one_process(fsdp_run, smoke_teacher, smoke_latents, tmp_path, capsys):
    """DCP reshards the two processes' shards for one. Its first iteration draws what rank 0 drew (its RNG state and
    batch), on the same weights, so its losses are the two-process run's at that iteration."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(fsdp_run / "checkpoints" / "step-000008", run / "checkpoints" / "step-000008")
    args = smoke_args(smoke_teacher, smoke_latents, run, *RUN, "iterations=10", "distributed=\"fsdp\"")
    assert main(args) == 0
    assert "resumed from" in capsys.readouterr().out
    one, two = pd.read_csv(run / "metrics.csv"), pd.read_csv(fsdp_run / "metrics.csv")
    assert one["iteration"].tolist() == [8, 9]
    for key in ("g_loss", "d_loss", "real_logit", "fake_logit"):
        assert one[key][0] == pytest.approx(two[key][8], abs=1e-6), key
    record = json.loads((run / "checkpoints" / "step-000010" / "ladd_checkpoint.json").read_text())
    assert record["num_processes"] == 1 and record["iteration"] == 10


@pytest.mark.parametrize("setting,environment,message", [
    ("distributed=\"ddp\"", {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "launched with an FSDP config"),
    ("distributed=\"auto\"", {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "fsdp_version: 2"),
    ("distributed=\"auto\"", {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2",
                              "FSDP_ACTIVATION_CHECKPOINTING": "true"}, "gradient_checkpointing=true"),
    ("distributed=\"zero3\"", {}, "distributed must be 'auto', 'ddp' or 'fsdp'"),
])
def test_conflicting_sharding_settings_are_one_line_errors(smoke_teacher, smoke_latents, tmp_path, capsys,
                                                           monkeypatch, setting, environment, message):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert cli_exit_code(main, smoke_args(smoke_teacher, smoke_latents, tmp_path / "bad", setting)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_a_ddp_checkpoint_is_not_resumed_sharded(smoke_teacher, smoke_latents, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(smoke_args(smoke_teacher, smoke_latents, run, "iterations=1")) == 0
    capsys.readouterr()
    assert cli_exit_code(main, smoke_args(smoke_teacher, smoke_latents, run, "iterations=2",
                                          "distributed=\"fsdp\"")) == 2
    assert "is a DDP checkpoint; resume it with distributed='ddp'" in capsys.readouterr().err
