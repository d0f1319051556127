"""LADD checkpoints and exported students.

A checkpoint folder `OUT/checkpoints/step-NNNNNN/` holds everything needed to resume exactly:
  - accelerate state: the student (model.safetensors), the discriminator heads (model_1.safetensors), both
    optimisers, both LR schedules, and every process's RNG states;
  - ema.safetensors: the student's EMA weights;
  - ladd_checkpoint.json: iteration (= data position, see `ladd.data`), EMA step, teacher path, student config;
  - sampling_defaults.json: how to sample the student, with its sigma table (so `bench.run --model CHECKPOINT`
    works).
It is written under a temporary name and renamed when complete: a killed run never leaves a half checkpoint.

A sharded run's checkpoint (`distributed = "fsdp"`, `ladd.sharding`) holds the same record and sampler, accelerate's
schedules and RNG states, and instead of the safetensors files a `sharded/` folder written by
`torch.distributed.checkpoint`: student, heads, both optimisers and the EMA, one file per process. It resumes on any
number of processes (DCP reshards), and the readers below load its EMA student whole in one process.

The frozen teacher is never written: exports and checkpoints only ever serialise the student's own modules
(another LADD implementation once saved the teacher over the trained student).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch
from diffusers import SD3Transformer2DModel
from safetensors.torch import load_file, save_file

from ladd.cli import LaddError
from ladd.pipelines import link_identical_components, load_pipeline
from ladd.sampling import (consistency_scheduler, read_sampling_defaults, read_student_timesteps,
                           student_sampling_defaults, write_sampling_defaults)
from ladd.sharding import SHARDED_DIR, ShardedTraining, load_sharded, read_full_state, save_sharded
from ladd.timesteps import StudentTimesteps

CHECKPOINT_FILE = "ladd_checkpoint.json"
EMA_FILE = "ema.safetensors"
HEADS_FILE = "model_1.safetensors"  # accelerate's name for the second prepared model: the heads


def checkpoint_dir(out: Path, iteration: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{iteration:06d}"


def complete_checkpoints(out: Path) -> list[Path]:
    """Every complete checkpoint of a run, oldest first (temporary folders of a killed save are ignored)."""
    folder = Path(out) / "checkpoints"
    return sorted(p for p in folder.glob("step-??????") if p.is_dir() and (p / CHECKPOINT_FILE).is_file())


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint."""
    done = complete_checkpoints(out)
    return done[-1] if done else None


def ema_state_dict(ema, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict (buffers included) with EMA values for its parameters."""
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    names = [name for name, _ in model.named_parameters()]
    state.update({name: p.detach().cpu().contiguous() for name, p in zip(names, ema.shadow_params)})
    return state


def swap_in(staged: Path, final: Path) -> None:
    """Move a completely written folder to its final name, replacing what was there. The old folder is renamed
    aside first and removed after (never written into: its components may be symlinks to another model's)."""
    if final.exists():
        previous = final.with_name(final.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
        os.replace(staged, final)
        shutil.rmtree(previous)
    else:
        os.replace(staged, final)


def save_checkpoint(accelerator, out: Path, iteration: int, ema, student, info: dict, timesteps: StudentTimesteps,
                    keep: int = 2, sharded: ShardedTraining | None = None) -> Path:
    """Write checkpoint `iteration`; with `sharded` (FSDP), the models, optimisers and EMA go through DCP."""
    final = checkpoint_dir(out, iteration)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if sharded is not None:
        save_sharded(sharded, tmp / SHARDED_DIR)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if sharded is None:
            save_file(ema_state_dict(ema, student), str(tmp / EMA_FILE))
        record = {**info, "iteration": iteration, "ema_optimization_step": ema.optimization_step,
                  "student_config": dict(student.config), "sharded": sharded is not None,
                  "num_processes": accelerator.num_processes}
        write_sampling_defaults(tmp, **student_sampling_defaults(read_sampling_defaults(info["teacher"]), timesteps))
        (tmp / CHECKPOINT_FILE).write_text(json.dumps(record, indent=2, default=str))
        swap_in(tmp, final)
        for old in sorted((Path(out) / "checkpoints").glob("step-??????"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def is_sharded(record: dict) -> bool:
    return bool(record.get("sharded"))


def load_checkpoint(accelerator, path: Path, ema, student, sharded: ShardedTraining | None = None) -> int:
    """Restore a checkpoint into prepared objects (with `sharded`: into the FSDP run's shards, whatever number of
    processes wrote it); returns the iteration to continue from."""
    record = json.loads((Path(path) / CHECKPOINT_FILE).read_text())
    if is_sharded(record) != (sharded is not None):
        kind, setting = ("sharded (FSDP)", "fsdp") if is_sharded(record) else ("DDP", "ddp")
        raise LaddError(f"{path} is a {kind} checkpoint; resume it with distributed='{setting}'")
    accelerator.load_state(str(path))
    if sharded is not None:
        load_sharded(sharded, Path(path) / SHARDED_DIR)
    else:
        shadow = load_file(str(Path(path) / EMA_FILE))
        names = [name for name, _ in student.named_parameters()]
        ema.shadow_params = [shadow[name].to(p.device, p.dtype) for name, p in zip(names, student.parameters())]
    ema.optimization_step = record["ema_optimization_step"]
    return record["iteration"]


def student_pipeline(teacher_pipe, student: SD3Transformer2DModel):
    """The teacher's pipeline with the student as its transformer and the consistency scheduler.
    Built fresh, so the teacher pipeline object keeps its own transformer."""
    components = {**teacher_pipe.components, "transformer": student,
                  "scheduler": consistency_scheduler(teacher_pipe.scheduler.config)}
    return type(teacher_pipe)(**components)


def export_student(teacher_dir: str | Path, student: SD3Transformer2DModel, out_dir: str | Path,
                   timesteps: StudentTimesteps, link_teacher: bool = False,
                   weights_dtype: torch.dtype | None = None) -> tuple[Path, list[str]]:
    """Save a student as an ordinary pipeline folder that stock diffusers samples with the consistency sampler at
    the student's timesteps (`ladd.sampling`: scheduler config + sampling_defaults.json with the sigma table).

    With `link_teacher`, components identical to the teacher's become symlinks to them. `weights_dtype` stores the
    transformer's weights in that dtype (float16 halves a float32 folder; `from_pretrained` loads them as float32
    unless told otherwise). The folder is written
    fresh beside `out_dir` and swapped in when complete: saving into an earlier export would write through its
    symlinks into the teacher's own files, and a failed export leaves the previous one intact.
    Returns the folder and the names of the linked components.
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if weights_dtype is not None:
        student = copy.deepcopy(student).to(weights_dtype)
    pipe = student_pipeline(load_pipeline(teacher_dir), student)
    pipe.save_pretrained(staging, safe_serialization=True)
    write_sampling_defaults(staging, **student_sampling_defaults(read_sampling_defaults(teacher_dir), timesteps))
    linked = link_identical_components(staging, teacher_dir) if link_teacher else []
    swap_in(staging, out_dir)
    return out_dir, linked


def checkpoint_timesteps(record: dict) -> StudentTimesteps:
    """The student timesteps a checkpoint was trained on (the paper's for checkpoints that predate the record)."""
    student = (record.get("config") or {}).get("student") or {}
    return StudentTimesteps.for_sampling(student["timesteps"]) if "timesteps" in student else StudentTimesteps()


def load_checkpoint_student(checkpoint: str | Path, use_ema: bool = True
                            ) -> tuple[SD3Transformer2DModel, Path, StudentTimesteps]:
    """The student saved in a training checkpoint (EMA weights by default), the teacher folder it came from, and
    the timesteps it was trained on."""
    checkpoint = Path(checkpoint)
    record = json.loads((checkpoint / CHECKPOINT_FILE).read_text())
    student = SD3Transformer2DModel.from_config(record["student_config"])
    if is_sharded(record):
        state = read_full_state(checkpoint / SHARDED_DIR, "ema" if use_ema else "student", student.state_dict())
    else:
        state = load_file(str(checkpoint / (EMA_FILE if use_ema else "model.safetensors")))
    student.load_state_dict(state)
    return student.eval(), Path(record["teacher"]), checkpoint_timesteps(record)


def load_student(path: str | Path) -> tuple[SD3Transformer2DModel, StudentTimesteps | None]:
    """A student from a training checkpoint (its EMA weights) or from a pipeline folder (its transformer), with its
    timesteps (None for a folder exported without a sigma table)."""
    path = Path(path)
    if (path / CHECKPOINT_FILE).is_file():
        student, _, timesteps = load_checkpoint_student(path)
        return student, timesteps
    if not (path / "transformer").is_dir():
        raise ValueError(f"{path} has no transformer/ folder and is not a LADD checkpoint "
                         "(a student pipeline folder or a training checkpoint is expected)")
    return SD3Transformer2DModel.from_pretrained(path / "transformer").eval(), read_student_timesteps(path)


def load_student_pipeline(checkpoint: str | Path, use_ema: bool = True):
    """A sampling pipeline from a training checkpoint (EMA weights by default): for `bench.run --model CKPT`."""
    student, teacher, _ = load_checkpoint_student(checkpoint, use_ema)
    return student_pipeline(load_pipeline(teacher), student)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, link_teacher: bool = False):
    """`export_student` for a training checkpoint's EMA student (e.g. the one chosen on validation prompts)."""
    student, teacher, timesteps = load_checkpoint_student(checkpoint)
    return export_student(teacher, student, out_dir, timesteps, link_teacher)
