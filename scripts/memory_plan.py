"""Per-GPU memory of one LADD iteration at SD3-medium's (2B) and SD3.5-Large's (8B) sizes under DDP and FSDP: the
memory plan in docs/ladd.md ("Scaling past one machine").

    python scripts/memory_plan.py                       # both architectures, batch 1-8 per GPU, 8 GPUs of 80 GB
    python scripts/memory_plan.py --arch tiny --gpus 2  # the same code at test size (tests/scripts)

No weights are loaded and no GPU is needed. Parameter counts are exact: the published transformer configs are built
on the meta device, with the discriminator heads `ladd.train` would put on them. Activations are counted, not
assumed: one block of the architecture (its real width, random weights) runs forward on the CPU under bf16 autocast
on a few hundred tokens, and every tensor autograd keeps for backward is summed (each storage once; parameters and
their bf16 casts excluded); the count is linear in tokens (checked at two lengths), so it scales to 1024x1024
(4096 image + 333 text tokens). The heads are counted the same way on a 16x16 grid.

Model of one iteration (`ladd.train.ladd_iteration`), per GPU, b samples per GPU, N GPUs:
  - state kept all iteration: student weights (fp32), AdamW moments (8 bytes a parameter), EMA (fp32), the teacher
    (fp32), the heads with their AdamW state and DDP's gradient buckets (torch's default copy of every gradient);
    under DDP the student's buckets too; under FSDP the student's and teacher's parts divided by N (the heads stay
    replicated: ladd.sharding);
  - three moments, whichever is largest:
    1. the generator step's backward begins: both transformers' kept activations (all of a block's, or with
       checkpointing its fp32 inputs), the feature grids of every hooked block (fp32 copies), the heads'
       activations, and one block's activations plus as much again for their gradients (the block being
       recomputed, or the last one);
    2. the student's AdamW step: its gradients, one gradient-sized temporary (PyTorch's foreach AdamW), and the fake
       feature grids kept for the discriminator step;
    3. the discriminator step's backward begins: real and fake grids, their concatenation, the heads' activations
       on both;
  - under FSDP, parameters gathered in bf16 on top: two blocks at a time (the running one and the prefetched one)
    with a block's bf16 and fp32 gradients on their way to reduce-scatter, plus the root module (embedders, output
    layer), which stays gathered; with "shard grad+optimiser" the student's whole bf16 copy stays gathered from its
    forward to the end of its backward (the teacher always reshards: ladd.sharding).
Not modelled: the CUDA context, NCCL buffers and allocator fragmentation, which the 5% headroom below stands for;
the autocast cache of the student's bf16 weight casts during its forward (2 bytes a parameter, never at the peak).
Checked against the one measurement: SD3-medium at batch 4 on one H100, fp32 weights, bf16 autocast, checkpointing,
peak 47.7 GiB (scripts/full_size_cost.py, docs/ladd-results.md).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass

import torch
from diffusers import SD3Transformer2DModel

from ladd.config import LaddConfig, load_config
from ladd.discriminator import ConditionEmbedding, DiscriminatorHead
from ladd.features import TeacherFeatures
from ladd.paths import CONFIGS_DIR
from ladd.train import build_discriminator

GiB = 2**30
# The transformer configs of stabilityai/stable-diffusion-3-medium-diffusers and stabilityai/stable-diffusion-3.5-large
# (as scripts/full_size_cost.py builds the former), with their token counts at 1024x1024: a 128x128 latent in 2x2
# patches, 77 CLIP + 256 T5 text tokens. "tiny" is the tests' miniature.
SD3 = dict(patch_size=2, in_channels=16, out_channels=16, joint_attention_dim=4096, pooled_projection_dim=2048,
           sample_size=128, pos_embed_max_size=192)
ARCHITECTURES = {
    "sd3-medium": dict(transformer=dict(SD3, num_layers=24, num_attention_heads=24, attention_head_dim=64,
                                        caption_projection_dim=1536), image_tokens=64 * 64, text_tokens=333),
    "sd3.5-large": dict(transformer=dict(SD3, num_layers=38, num_attention_heads=38, attention_head_dim=64,
                                         caption_projection_dim=2432, qk_norm="rms_norm"),
                        image_tokens=64 * 64, text_tokens=333),
    "tiny": dict(transformer=dict(patch_size=2, in_channels=4, out_channels=4, joint_attention_dim=32,
                                  pooled_projection_dim=32, sample_size=16, pos_embed_max_size=16, num_layers=2,
                                  num_attention_heads=2, attention_head_dim=8, caption_projection_dim=16),
                 image_tokens=8 * 8, text_tokens=24),
}
MEASURED_GIB = 47.7  # SD3-medium, batch 4, one H100: docs/ladd-results.md
STRATEGIES = {"ddp": "DDP", "fsdp-grad-op": "FSDP, shard grad+optimiser", "fsdp-full": "FSDP, full shard"}


@dataclass
class Sizes:
    """Parameter and token counts of one architecture with its heads."""
    student: int  # = teacher: the student starts as a copy
    block: int  # the largest transformer block
    root: int  # everything outside the blocks (embedders, output layer)
    heads: int
    blocks: int
    hooked: int  # blocks with a head
    width: int
    image_tokens: int
    text_tokens: int


@dataclass
class Census:
    """Bytes autograd keeps per token and unit of width (block) or per image token and unit of width (heads)."""
    block: float  # one block, bf16 autocast, no checkpointing
    head: float  # one head on its grid
    checkpointed_block: float = 4.0  # a checkpointed block keeps only its inputs: both fp32 residual streams


@dataclass
class Setting:
    strategy: str  # "single" (one GPU, no wrapper), "ddp", "fsdp-grad-op", "fsdp-full"
    checkpointing: bool
    gpus: int
    ema: bool = True  # ladd.train keeps the EMA on the GPU; scripts/full_size_cost.py has none
    head_sets: int = 1  # scripts/full_size_cost.py builds one set of heads per recipe


# --- counts ---------------------------------------------------------------------------------------------------


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_transformer(arch: dict) -> SD3Transformer2DModel:
    with torch.device("meta"):
        return SD3Transformer2DModel(**arch["transformer"])


def sizes_of(arch: dict, cfg: LaddConfig) -> Sizes:
    transformer = meta_transformer(arch)
    features = TeacherFeatures(transformer, list(cfg.discriminator.blocks) or None)
    with torch.device("meta"):
        heads = build_discriminator(cfg, features, transformer)
    blocks = transformer.transformer_blocks
    return Sizes(student=count(transformer), block=max(count(b) for b in blocks), root=count(transformer) -
                 count(blocks), heads=count(heads), blocks=len(blocks), hooked=len(features.blocks),
                 width=features.channels, image_tokens=arch["image_tokens"], text_tokens=arch["text_tokens"])


def saved_bytes(run, module: torch.nn.Module) -> int:
    """Bytes of the tensors autograd saves for backward while `run()` runs: each storage once, without `module`'s
    parameters and their casts (autocast saves a bf16 weight, possibly transposed)."""
    own = {p.untyped_storage().data_ptr() for p in module.parameters()}
    shapes = {tuple(p.shape) for p in module.parameters()} | {tuple(p.shape)[::-1] for p in module.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own and tuple(tensor.shape) not in shapes:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(kept.values())


def materialised(module: torch.nn.Module) -> torch.nn.Module:
    """A meta module with random CPU weights (what a forward costs does not depend on them)."""
    module = module.to_empty(device="cpu")
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return module


@functools.cache
def block_bytes_per_token(name: str, image_tokens: int, text_tokens: int) -> float:
    transformer = meta_transformer(ARCHITECTURES[name])
    block, width = materialised(transformer.transformer_blocks[0]), transformer.inner_dim
    inputs = (torch.randn(1, image_tokens, width, requires_grad=True),
              torch.randn(1, text_tokens, width, requires_grad=True), torch.randn(1, width, requires_grad=True))
    kept = saved_bytes(lambda: block(hidden_states=inputs[0], encoder_hidden_states=inputs[1], temb=inputs[2]), block)
    return kept / ((image_tokens + text_tokens) * width)


def head_bytes_per_token(arch: dict, sizes: Sizes, cfg: LaddConfig, side: int = 16) -> float:
    d, pooled = cfg.discriminator, arch["transformer"]["pooled_projection_dim"]
    with torch.device("meta"):
        head = DiscriminatorHead(sizes.width, d.cond_dim, d.hidden, d.cmap_dim, d.spectral_norm)
        condition = ConditionEmbedding(pooled, d.cond_dim)
    head, condition = materialised(head), materialised(condition)
    grid = torch.randn(1, sizes.width, side, side, requires_grad=True)
    cond = condition(torch.rand(1), torch.randn(1, pooled))
    return saved_bytes(lambda: head(grid, cond), head) / (side * side * sizes.width)


def census_of(name: str, sizes: Sizes, cfg: LaddConfig) -> tuple[Census, float]:
    """The census, and how far its per-token count moves between two sequence lengths (linearity check)."""
    short = block_bytes_per_token(name, 256, 32)
    long = block_bytes_per_token(name, 512, 64)
    return Census(block=long, head=head_bytes_per_token(ARCHITECTURES[name], sizes, cfg)), abs(long - short) / long


# --- the model of one iteration (bytes per GPU) ---------------------------------------------------------------


def shard(setting: Setting) -> int:
    """How many ways state is divided: FSDP shards it over the GPUs, DDP and one GPU keep it whole."""
    return setting.gpus if setting.strategy.startswith("fsdp") else 1


def model_state(s: Sizes, setting: Setting) -> float:
    """What stays all iteration: student weights + AdamW moments (+ EMA) and the teacher, divided under FSDP; the
    replicated heads with their AdamW state; DDP's gradient buckets (a copy of every gradient it syncs)."""
    student = (4 + 8 + (4 if setting.ema else 0) + (4 if setting.strategy == "ddp" else 0)) * s.student
    heads = (4 + 8 + (4 if setting.strategy != "single" else 0)) * s.heads * setting.head_sets
    return (student + 4 * s.student) / shard(setting) + heads


def student_gradients(s: Sizes, setting: Setting) -> float:
    return 4 * s.student / shard(setting)


def adam_temporary(s: Sizes, setting: Setting) -> float:
    """PyTorch's foreach AdamW allocates one gradient-sized temporary (the square root of the second moment)."""
    return 4 * s.student / shard(setting)


def tokens(s: Sizes, batch: int) -> float:
    return batch * (s.image_tokens + s.text_tokens) * s.width


def kept_activations(s: Sizes, c: Census, batch: int, checkpointing: bool) -> float:
    """One transformer's activations kept for backward."""
    return s.blocks * (c.checkpointed_block if checkpointing else c.block) * tokens(s, batch)


def backward_working_set(s: Sizes, c: Census, batch: int) -> float:
    """One block's activations (recomputed, or the last one's) and as much again for their gradients."""
    return 2 * c.block * tokens(s, batch)


def feature_grids(s: Sizes, batch: int) -> float:
    """`tokens_to_grid` copies each hooked block's image tokens into a (B, C, h, w) fp32 grid."""
    return s.hooked * 4 * batch * s.image_tokens * s.width


def heads_activations(s: Sizes, c: Census, batch: int) -> float:
    return s.hooked * c.head * batch * s.image_tokens * s.width


def gathered_parameters(s: Sizes, setting: Setting) -> float:
    """FSDP's bf16 parameters gathered at the generator step's backward: the student's and teacher's roots, two
    blocks with a block's bf16 + fp32 gradients; with "shard grad+optimiser", the student's whole copy."""
    if not setting.strategy.startswith("fsdp"):
        return 0.0
    blocks = 2 * (2 + 2 + 4) * s.block
    roots = 2 * 2 * s.root
    student_copy = 2 * s.student if setting.strategy == "fsdp-grad-op" else 0
    return blocks + roots + student_copy


def moments(s: Sizes, c: Census, setting: Setting, batch: int) -> dict[str, float]:
    state = model_state(s, setting)
    grids = feature_grids(s, batch)
    return {
        "generator backward": state + gathered_parameters(s, setting) + 2 * kept_activations(
            s, c, batch, setting.checkpointing) + grids + heads_activations(s, c, batch)
        + backward_working_set(s, c, batch),
        "student AdamW step": state + student_gradients(s, setting) + adam_temporary(s, setting) + grids,
        "discriminator backward": state + 4 * grids + heads_activations(s, c, 2 * batch),
    }


def peak(s: Sizes, c: Census, setting: Setting, batch: int) -> float:
    return max(moments(s, c, setting, batch).values())


# --- report ---------------------------------------------------------------------------------------------------




def parameters_text(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.1f}M"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHITECTURES), default=["sd3-medium", "sd3.5-large"])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-gib", type=float, default=79.6, help="an H100 80GB reports 81559 MiB")
    parser.add_argument("--headroom", type=float, default=0.05)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="samples per GPU")
    args = parser.parse_args(argv)
    limit = args.gpu_gib * (1 - args.headroom)  # the headroom stands for what the model leaves out
    plan_cfg = LaddConfig()  # the paper's heads: every block, hidden 128
    measured_cfg = load_config(CONFIGS_DIR / "ladd-shapes.toml")  # what scripts/full_size_cost.py measured with

    rows, lines = [], []
    for name in args.arch:
        arch = ARCHITECTURES[name]
        s = sizes_of(arch, plan_cfg)
        c, drift = census_of(name, s, plan_cfg)
        lines.append(f"| {name} | {parameters_text(s.student)} | {s.blocks} x {parameters_text(s.block)} | "
                     f"{parameters_text(s.heads)} | {s.image_tokens} + {s.text_tokens} | {c.block:.1f} "
                     f"({drift:.1%}) | {c.checkpointed_block:.1f} | {c.head:.1f} |")
        for strategy, label in STRATEGIES.items():
            for checkpointing in (False, True):
                setting = Setting(strategy, checkpointing, args.gpus)
                cells = []
                for batch in args.batches:
                    gib = peak(s, c, setting, batch) / GiB
                    cells.append(f"{gib:.1f}" if gib <= limit else f"{gib:.1f} ✗")
                rows.append(f"| {name} | {label} | {'yes' if checkpointing else 'no'} | " + " | ".join(cells) + " |")

    print(f"# LADD memory plan: GiB per GPU for one iteration, {args.gpus} GPUs of {args.gpu_gib:g} GiB\n")
    print("| architecture | student = teacher | blocks | heads | image + text tokens | bytes kept per token x width: "
          "block (change between two lengths) | checkpointed block | head (per image token) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines) + "\n")
    print(f"fp32 master weights, bf16 compute; ✗ = over {limit:.1f} GiB ({args.gpu_gib:g} GiB less "
          f"{args.headroom:.0%} headroom)\n")
    print("| architecture | strategy | activation checkpointing | " +
          " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|---|---|" + "---|" * len(args.batches))
    print("\n".join(rows))

    if "sd3-medium" in args.arch:
        arch = ARCHITECTURES["sd3-medium"]
        s = sizes_of(arch, measured_cfg)
        c, _ = census_of("sd3-medium", s, measured_cfg)
        single = Setting("single", checkpointing=True, gpus=1, ema=False, head_sets=2)
        parts = moments(s, c, single, 4)
        model = max(parts.values()) / GiB
        print(f"\nCheck: SD3-medium, batch 4, one GPU, fp32 weights + bf16 autocast + checkpointing, no EMA, two sets "
              f"of {parameters_text(s.heads)} heads (scripts/full_size_cost.py): model {model:.1f} GiB "
              f"({', '.join(f'{k} {v / GiB:.1f}' for k, v in parts.items())}), measured {MEASURED_GIB} GiB "
              f"({model / MEASURED_GIB - 1:+.1%})")


if __name__ == "__main__":
    main()
