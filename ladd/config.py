"""Configuration is plain typed data: dataclasses carry the defaults, a TOML file and `section.key=value` command-line
overrides change them. An unknown key or a value of the wrong type is a `LaddError` naming the valid keys.

`LaddConfig` is LADD training's configuration, with the paper's values where the paper states them (t̂ ~
logit-normal(m = 1, s = 1), Sec. 4.1; student timesteps {1, .75, .5, .25} with the warm-up p = [0, 0, .5, .5] for
500 iterations, then [.7, .1, .1, .1], Sec. 5; hinge loss and 2D-conv heads on every teacher block, Sec. 3; 10k
iterations, Sec. 4) and this project's own choices elsewhere (marked "ours").
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ladd.cli import LaddError
from ladd.timesteps import StudentTimesteps

_TIMESTEPS = StudentTimesteps()


@dataclass
class StudentConfig:
    timesteps: tuple[float, ...] = _TIMESTEPS.timesteps
    warmup_probs: tuple[float, ...] = _TIMESTEPS.warmup_probs  # low noise first (stability) ...
    probs: tuple[float, ...] = _TIMESTEPS.probs  # ... then mostly full noise (1-step quality)
    switch_at: int = _TIMESTEPS.switch_at
    lr: float = 1e-4  # ours
    ema_decay: float = 0.99  # ours; the EMA weights are what is exported

    def schedule(self) -> StudentTimesteps:
        return StudentTimesteps(self.timesteps, self.warmup_probs, self.probs, self.switch_at)


@dataclass
class RenoiseConfig:
    logit_mean: float = 1.0  # m of t̂ ~ π(t; m, s): biased towards high noise (global coherence)
    logit_std: float = 1.0  # s


@dataclass
class DiscriminatorConfig:
    blocks: tuple[int, ...] = ()  # teacher blocks with a head; () = every block
    hidden: int = 128
    cmap_dim: int = 64
    cond_dim: int = 128
    spectral_norm: bool = True
    loss: str = "hinge"  # or "bce"
    lr: float = 1e-4  # ours
    r1_weight: float = 0.0  # > 0: R1 on real features (lazily, every r1_every iterations); not in the paper
    r1_every: int = 16
    mismatch_weight: float = 0.0  # > 0: real latents under a neighbour's prompt count as fakes; not in the paper


@dataclass
class DistillConfig:
    weight: float = 0.0  # L_distill: synthetic data makes it unnecessary (Sec. 4.2); real data wants it
    guidance_scale: float = 1.0  # > 1: the target is the teacher's CFG prediction (one more teacher forward)


@dataclass
class LaddConfig:
    teacher: str = ""  # pipeline folder or cached hub id of the frozen teacher (features, data generator)
    data: str = ""  # `ladd.synth` shards
    out: str = "results/ladd/run"  # checkpoints, metrics.csv, config.json, the exported pipeline
    student_from: str = ""  # "" = a copy of the teacher; or another pipeline folder (scaling study)
    export: str = ""  # final pipeline folder ("" = <out>/pipeline)
    export_link_teacher: bool = False  # symlink the export's components identical to the teacher's
    resume: str = "auto"  # "auto": latest checkpoint in <out>; "": start fresh; or a checkpoint folder
    seed: int = 0
    iterations: int = 10_000
    batch_size: int = 4  # per process; ours (SD3-medium's LADD step fits one 80 GB GPU at 4)
    warmup: int = 50  # linear learning-rate warm-up, iterations; ours
    adam_betas: tuple[float, float] = (0.0, 0.99)  # ours (a GAN's usual beta1 = 0)
    max_grad_norm: float = 1.0
    max_skipped: int = 20  # stop after this many iterations in a row with non-finite gradients
    mixed_precision: str = "no"  # "no" or "bf16"
    cpu: bool = False
    # "auto": FSDP2 when `accelerate launch` was given an FSDP config (configs/accelerate/fsdp-*.yaml), else DDP;
    # "ddp" or "fsdp" force one (ladd.sharding)
    distributed: str = "auto"
    gradient_checkpointing: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    student: StudentConfig = field(default_factory=StudentConfig)
    renoise: RenoiseConfig = field(default_factory=RenoiseConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def check(self) -> None:
        """Refuse values no run can use (a LaddError, before any work). Paths are checked where they are used."""
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints", "r1_every"):
            value = getattr(self.discriminator if name == "r1_every" else self, name)
            if value <= 0:
                raise LaddError(f"{name} must be positive, got {value}")
        for name, value in (("student.lr", self.student.lr), ("discriminator.lr", self.discriminator.lr)):
            if not math.isfinite(value) or value <= 0:
                raise LaddError(f"{name} must be a positive number, got {value}")
        for name, value in (("distill.weight", self.distill.weight), ("distill.guidance_scale",
                            self.distill.guidance_scale), ("discriminator.mismatch_weight",
                            self.discriminator.mismatch_weight), ("discriminator.r1_weight",
                            self.discriminator.r1_weight), ("warmup", self.warmup)):
            if value < 0:
                raise LaddError(f"{name} must not be negative, got {value}")
        if self.discriminator.mismatch_weight > 0 and self.batch_size < 2:
            raise LaddError("discriminator.mismatch_weight > 0 borrows prompts within a batch: batch_size must be >= 2")
        if self.discriminator.loss not in ("hinge", "bce"):
            raise LaddError(f"discriminator.loss must be 'hinge' or 'bce', got {self.discriminator.loss!r}")
        if self.mixed_precision == "fp16":
            # accelerate updates its one GradScaler after each optimiser's step: two updates per LADD iteration,
            # and a step skipped by the NaN guard would leave the scaler unscaled twice over
            raise LaddError("mixed_precision='fp16' is not supported (the two players share one loss scaler); use "
                            "'bf16' (or 'no')")
        if self.mixed_precision not in ("no", "bf16"):
            raise LaddError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.distributed not in ("auto", "ddp", "fsdp"):
            raise LaddError(f"distributed must be 'auto', 'ddp' or 'fsdp', got {self.distributed!r}")
        try:
            self.student.schedule()
        except ValueError as error:
            raise LaddError(f"student: {error}") from None


# --- reading ------------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """Read an override value as TOML (numbers, booleans, lists, quoted strings); anything else is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Return a copy of `config` with each `dotted.key=value` applied; unknown keys are an error (typos)."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise LaddError(f"override {item!r} is not of the form key=value")
        *parents, leaf = key.strip().split(".")
        node = config
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise LaddError(f"unknown config section {part!r} in override {item!r}")
            node = node[part]
        if leaf not in node:
            raise LaddError(f"unknown config key {key.strip()!r} (valid here: {', '.join(sorted(node))})")
        if isinstance(node[leaf], dict):
            raise LaddError(f"config key {key.strip()!r} is a section: set its keys, e.g. {key.strip()}.KEY=VALUE")
        node[leaf] = parse_value(value.strip())
    return config


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LaddError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise LaddError(f"{path} is not valid TOML ({error})") from None


def load_dict_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """An untyped TOML config with overrides (every key must exist in the file)."""
    return apply_overrides(read_toml(path), list(overrides))


def merge(defaults: dict, changes: dict, where: str = "") -> dict:
    """`defaults` updated by `changes`, recursively; a key of `changes` that `defaults` lacks is a LaddError."""
    merged = copy.deepcopy(defaults)
    for key, value in changes.items():
        name = f"{where}{key}"
        if key not in merged:
            raise LaddError(f"unknown config key {name!r} (valid here: {', '.join(sorted(merged))})")
        if isinstance(merged[key], dict):
            if not isinstance(value, dict):
                raise LaddError(f"config key {name!r} is a section ([{name}]), not a value")
            merged[key] = merge(merged[key], value, f"{name}.")
        else:
            merged[key] = value
    return merged


def _convert(value: Any, kind: Any, name: str) -> Any:
    """`value` as the annotated type `kind` (ints pass as floats, lists as tuples); a LaddError otherwise."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise LaddError(f"config key {name!r} is a section ([{name}]), not a value")
        return from_dict(kind, value, f"{name}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise LaddError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(kind)
        item = args[0]
        if len(args) != 2 or args[1] is not Ellipsis:
            if len(value) != len(args):
                raise LaddError(f"{name} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_convert(v, item, name) for v in value)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (bool, str) and isinstance(value, kind):
        return value
    raise LaddError(f"{name} must be {kind.__name__ if isinstance(kind, type) else kind}, got {value!r}")


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from a dict of exactly its fields (missing ones keep their defaults)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise LaddError(f"unknown config key {where}{unknown[0]!r} (valid here: {', '.join(sorted(names))})")
    return cls(**{k: _convert(v, hints[k], f"{where}{k}") for k, v in data.items()})


def to_dict(config) -> dict:
    """A config as plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(config, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v
                                                                   for k, v in items})


def load_config(path: str | Path | None = None, overrides: list[str] = (), schema=LaddConfig):
    """`schema`'s defaults, changed by the TOML file at `path` (if any), then by `overrides`; checked."""
    data = to_dict(schema())
    if path is not None:
        data = merge(data, read_toml(path))
    config = from_dict(schema, apply_overrides(data, list(overrides)))
    if hasattr(config, "check"):
        config.check()
    return config

