"""FSDP2 for LADD (`distributed = "fsdp"`): the student and the frozen teacher sharded with PyTorch's `fully_shard`,
the discriminator heads replicated; the run's state checkpointed with `torch.distributed.checkpoint` (DCP).

What is sharded, and how:
  - student: one FSDP unit per transformer block plus the root (embedders, output layer); its fp32 parameters,
    gradients and AdamW state live as shards, 1/N per process. The EMA copy is made of the same shards (diffusers'
    `EMAModel` over DTensor parameters), so it is sharded like the student.
  - teacher: the same units. It has no gradient and no optimiser, but the generator step backpropagates through it,
    so each block is all-gathered again in backward (FSDP2's hooks on the block outputs) — also the blocks whose
    output reaches the loss only through a feature hook, because the hook records the block's own output tensor.
  - heads: replicated, with torch's DDP as in the DDP path: R1 (`discriminator.r1_weight`) differentiates the
    heads twice (`torch.autograd.grad(create_graph=True)`), and FSDP2 frees a parameter's gathered storage after the
    first backward while the graph of the second still holds it (pytorch/pytorch#172543; a segfault with sharded
    heads here, torch 2.14); and they are small: 1-2% of the student (22.6M parameters with SD3-medium's shapes-world
    heads, 47M with the paper's), 16 bytes a parameter replicated. Their state goes into the same DCP checkpoint
    (a replicated tensor is written once and loads on any world size).

What goes through accelerate and what does not: accelerate launches the processes and joins them (gloo on CPU, NCCL
on GPUs), autocasts, and checkpoints the learning-rate schedules and every process's RNG (`save_state`); the
launcher's FSDP settings (`accelerate launch --config_file configs/accelerate/fsdp-*.yaml`) arrive as its
`FullyShardedDataParallelPlugin`, which must say `fsdp_version: 2` and from which the student takes
`reshard_after_forward` and the CPU-offload policy. The sharding calls are torch's because accelerate 1.16
(a) switches to FSDP only for GPU-class backends — on CPU over gloo its `prepare` wraps the model in DDP instead,
so the tests could not run its path — and (b) takes one model per `prepare` call under FSDP2 and writes every
prepared model in `save_state`, which would serialise the frozen teacher into every checkpoint (and, under an FSDP
launch, it would shard the heads too).

Activation checkpointing is diffusers' own (`gradient_checkpointing = true`): it checkpoints each block by calling
the block module, so FSDP2's pre-forward hook re-gathers the block's parameters for the recompute, and the feature
hooks (`ladd.features`) ignore the recompute.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from accelerate.utils import FullyShardedDataParallelPlugin, parse_flag_from_env
from diffusers import SD3Transformer2DModel
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful
from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from ladd.cli import LaddError

SHARDED_DIR = "sharded"  # a checkpoint's DCP folder: one file per process and the metadata


def launched_with_fsdp() -> bool:
    """Whether `accelerate launch` was given an FSDP config (it exports ACCELERATE_USE_FSDP to the processes)."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def use_fsdp(distributed: str) -> bool:
    """`LaddConfig.distributed`: "fsdp", "ddp", or "auto" (FSDP exactly when the launcher's config is FSDP)."""
    launched = launched_with_fsdp()
    if distributed == "ddp" and launched:
        raise LaddError("distributed='ddp' but accelerate was launched with an FSDP config; launch with a DDP config "
                        "(configs/accelerate/ddp-1node.yaml) or set distributed='fsdp'")
    return distributed == "fsdp" or (distributed == "auto" and launched)


def launcher_plugin() -> FullyShardedDataParallelPlugin:
    """The FSDP settings of `accelerate launch` (its config file or --fsdp_* flags; FSDP2 defaults without them)."""
    plugin = FullyShardedDataParallelPlugin(**({} if launched_with_fsdp() else {"fsdp_version": 2}))
    if plugin.fsdp_version != 2:
        raise LaddError(f"ladd.train shards with FSDP2: set fsdp_version: 2 in the accelerate config (got "
                        f"{plugin.fsdp_version})")
    if plugin.activation_checkpointing:
        # accelerate's wrapper would only reach models it prepares, not the teacher: one switch for both
        raise LaddError("fsdp_activation_checkpointing is not used by ladd.train; set gradient_checkpointing=true in "
                        "the LADD config (it checkpoints the student's and the teacher's blocks)")
    return plugin


def join_process_group(device: torch.device) -> bool:
    """FSDP needs a process group; accelerate makes one only for two or more processes. A single process (a plain
    `python -m ladd.train distributed=fsdp`, scripts/full_size_mfu.py's smoke run) joins a group of one.
    Returns whether a group was created here."""
    if dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return True


def compute_policy(mixed_precision: str) -> MixedPrecisionPolicy:
    """bf16: parameters all-gathered and used in bf16, gradients reduce-scattered in fp32 onto the fp32 shards, which
    are the master weights AdamW steps. Forward inputs are not cast: autocast computes in bf16 as under DDP, while
    FSDP's input cast would round the timestep t·1000 to bf16 (750 → 752) before the sinusoidal embedding."""
    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
    return MixedPrecisionPolicy()


def shard_transformer(transformer: SD3Transformer2DModel, policy: MixedPrecisionPolicy,
                      reshard_after_forward: bool = True, offload: OffloadPolicy = OffloadPolicy()):
    """One FSDP unit per block (block i+1's all-gather overlaps block i's compute), then the root. With
    `reshard_after_forward=False` the blocks keep their gathered parameters from forward to backward (shard
    gradients and optimiser state only: less communication, more memory)."""
    for block in transformer.transformer_blocks:
        fully_shard(block, mp_policy=policy, reshard_after_forward=reshard_after_forward, offload_policy=offload)
    return fully_shard(transformer, mp_policy=policy, offload_policy=offload)


def shard_models(mixed_precision: str, plugin: FullyShardedDataParallelPlugin):
    """The `shard` step of `ladd.train.assemble_training`: shards the teacher and the student in place, before the
    optimisers are built over the student's shards. The heads are left whole (`replicate_heads`)."""
    policy = compute_policy(mixed_precision)

    def shard(teacher, student) -> None:
        shard_transformer(student, policy, plugin.reshard_after_forward, plugin.cpu_offload)
        # the teacher always reshards: the discriminator step runs it without gradient, and nothing would reshard
        # blocks kept gathered for a backward that never comes
        shard_transformer(teacher, policy, True, plugin.cpu_offload)

    return shard


def replicate_heads(discriminator: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """The heads with DDP's gradient all-reduce (fp32 parameters under autocast, as in the DDP path). Wrapping keeps
    the parameters, so an optimiser built over them stays valid."""
    discriminator.to(device)
    return DistributedDataParallel(discriminator, device_ids=[device.index] if device.type == "cuda" else None)


def ema_state(ema, student) -> dict[str, torch.Tensor]:
    """The student's state dict with its EMA values (shards) for the parameters: the layout of a DDP checkpoint's
    ema.safetensors. The tensors are the EMA's own, so DCP loads into them in place."""
    state = dict(get_model_state_dict(student))
    names = [name for name, _ in student.named_parameters()]
    state.update(zip(names, ema.shadow_params))
    return state


class ShardedTraining(Stateful):
    """What DCP saves of a sharded run: the student (shards) and the heads (replicated) with their optimisers, and
    the EMA. Model and optimiser states are keyed by parameter name (torch's state-dict API, which also drops DDP's
    `module.` prefix), so a different world size can load them (DCP reshards)."""

    def __init__(self, student, student_optimizer, heads, heads_optimizer, ema):
        self.student, self.student_optimizer = student, student_optimizer
        self.heads, self.heads_optimizer = heads, heads_optimizer
        self.ema = ema

    def state_dict(self) -> dict:
        return {"student": get_model_state_dict(self.student),
                "student_optimizer": get_optimizer_state_dict(self.student, self.student_optimizer),
                "heads": get_model_state_dict(self.heads),
                "heads_optimizer": get_optimizer_state_dict(self.heads, self.heads_optimizer),
                "ema": ema_state(self.ema, self.student)}

    def load_state_dict(self, state: dict) -> None:
        set_model_state_dict(self.student, state["student"])
        set_optimizer_state_dict(self.student, self.student_optimizer, state["student_optimizer"])
        set_model_state_dict(self.heads, state["heads"])
        set_optimizer_state_dict(self.heads, self.heads_optimizer, state["heads_optimizer"])
        names = [name for name, _ in self.student.named_parameters()]
        for shadow, name in zip(self.ema.shadow_params, names):
            if state["ema"][name] is not shadow:  # DCP loads in place; copy in case it handed back new tensors
                shadow.copy_(state["ema"][name])


def save_sharded(training: ShardedTraining, folder) -> None:
    """Every process writes its own shards; collective."""
    dcp.save({"training": training}, checkpoint_id=folder)


def load_sharded(training: ShardedTraining, folder) -> None:
    """Load a sharded checkpoint saved by any number of processes; collective."""
    dcp.load({"training": training}, checkpoint_id=folder)


def read_full_state(folder, entry: str, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One entry ("ema" or "student") of a sharded checkpoint as full tensors, in one process without a process
    group (DCP gathers every process's shards into `template`'s tensors): for sampling and exporting checkpoints."""
    with warnings.catch_warnings():  # DCP warns that it loads in one process, which is the point here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"training": {entry: template}}, checkpoint_id=folder, no_dist=True)
    return template


def gather_ema_student(ema, student) -> SD3Transformer2DModel | None:
    """The student with its EMA weights, gathered whole on the main process (None on the others); collective. The
    EMA is copied into the student's shards for the gather and the student's own weights put back after."""
    parameters = list(student.parameters())
    ema.store(parameters)
    ema.copy_to(parameters)
    full = get_model_state_dict(student, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    ema.restore(parameters)
    if dist.get_rank() != 0:
        return None
    with torch.device("meta"):  # no second full-size allocation: the gathered tensors become the parameters
        exported = SD3Transformer2DModel.from_config(student.config)
    exported.load_state_dict(full, assign=True)
    for name, buffer in student.named_buffers():  # buffers outside the state dict (non-persistent) stay unsharded
        if exported.get_buffer(name).is_meta:
            owner, _, leaf = name.rpartition(".")
            exported.get_submodule(owner).register_buffer(leaf, buffer.detach().cpu().clone(), persistent=False)
    return exported.eval()
