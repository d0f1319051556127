"""Sampling speed and LADD training cost at SD3's size, on random weights: the GPU counterpart of the shapes-world
rows in docs/ladd-results.md.

    python scripts/full_size_cost.py                              # SD3-medium's architecture, CUDA, bf16
    python scripts/full_size_cost.py --arch tiny --device cpu     # the same code at test size (tests/scripts)

A forward pass costs the same whatever the weights are, and real weights cannot be fetched here, so the script
builds SD3-medium's published architecture with random weights — the MMDiT (24 blocks of width 1536, patch 2),
CLIP-L and OpenCLIP-bigG text towers, T5-XXL's encoder and the 16-channel VAE, in a stock
`StableDiffusion3Pipeline` — and measures, each pair side by side in one process:

1. seconds per image, the teacher at SD3's defaults (50 Euler steps, CFG 7.0, shift 3.0) against a LADD student of
   the same architecture (4 consistency steps, guidance off: `ladd.checkpoint.student_pipeline`), for the whole
   pipeline (text encoders, denoising, VAE decode) and for text encoding + denoising alone;
2. one LADD iteration (`ladd.train.ladd_iteration` on the models `ladd.train.assemble_training` builds) against one
   plain diffusion fine-tuning iteration of the same student at the same batch, with bf16 autocast and gradient
   checkpointing as `ladd.train ... mixed_precision=bf16 gradient_checkpointing=true` trains on GPUs; the
   paper's recipe (adversarial loss only) and the shapes student's (plus L_distill against the teacher's CFG 4
   prediction).
Prints markdown (docs/ladd-results.md, "At SD3's size", holds this script's output).
"""

from __future__ import annotations

import argparse
import gc
import platform
import tempfile
from pathlib import Path

import diffusers
import torch
import transformers
from accelerate import Accelerator
from diffusers import AutoencoderKL, AutoencoderTiny, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from bench.timing import alternating_medians, ladd_work, plain_iteration
from ladd.checkpoint import student_pipeline
from ladd.conditioning import encode_prompts
from ladd.config import load_config
from ladd.paths import CONFIGS_DIR, REPO_ROOT
from ladd.pipelines import latent_downsampling, swap_vae
from ladd.shapes.zoo import build_tokenizer
from ladd.train import assemble_training, freeze, init_student, ladd_iteration

# Published architectures (the diffusers / transformers configs of stabilityai/stable-diffusion-3-medium-diffusers),
# and a miniature of the same shape for the tests.
ARCHITECTURES = {
    "sd3-medium": {
        "clip_l": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       projection_dim=768, hidden_act="quick_gelu", vocab_size=49408),
        "clip_g": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                       projection_dim=1280, hidden_act="gelu", vocab_size=49408),
        "t5": dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu",
                   vocab_size=32128),
        "vae": dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=16,
                    norm_num_groups=32, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609),
        "fast_decoder": dict(encoder_block_out_channels=[64] * 4, decoder_block_out_channels=[64] * 4,
                             num_encoder_blocks=[1, 3, 3, 3], num_decoder_blocks=[3, 3, 3, 1]),  # TAESD's
        "transformer": dict(num_layers=24, num_attention_heads=24, attention_head_dim=64, patch_size=2,
                            sample_size=128, pos_embed_max_size=192),
        "clip_length": 77, "t5_length": 256, "resolution": 1024, "shift": 3.0, "guidance": 7.0,
    },
    "tiny": {
        "clip_l": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       projection_dim=16, hidden_act="quick_gelu", vocab_size=256),
        "clip_g": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       projection_dim=32, hidden_act="gelu", vocab_size=256),
        "t5": dict(d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu",
                   vocab_size=256),
        "vae": dict(block_out_channels=[8, 8], layers_per_block=1, latent_channels=4, norm_num_groups=4,
                    sample_size=64, scaling_factor=1.0, shift_factor=0.0),
        "fast_decoder": dict(encoder_block_out_channels=[8] * 2, decoder_block_out_channels=[8] * 2,
                             num_encoder_blocks=[1, 1], num_decoder_blocks=[1, 1]),
        "transformer": dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, patch_size=2,
                            sample_size=16, pos_embed_max_size=16),
        "clip_length": 12, "t5_length": 12, "resolution": 32, "shift": 3.0, "guidance": 7.0,
    },
}

PROMPTS = REPO_ROOT / "prompts" / "parti128.txt"


def clip_text_tower(spec: dict, tokenizer, length: int) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(**spec, max_position_embeddings=length, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModelWithProjection(config)


def transformer_for(arch: dict) -> SD3Transformer2DModel:
    clip_width = arch["clip_l"]["projection_dim"] + arch["clip_g"]["projection_dim"]
    latent = arch["vae"]["latent_channels"]
    spec = arch["transformer"]
    return SD3Transformer2DModel(**spec, in_channels=latent, out_channels=latent,
                                 joint_attention_dim=arch["t5"]["d_model"], pooled_projection_dim=clip_width,
                                 caption_projection_dim=spec["num_attention_heads"] * spec["attention_head_dim"])


def random_sd3(arch: dict, device: str, dtype: torch.dtype) -> StableDiffusion3Pipeline:
    """A stock SD3 pipeline of the given architecture with random weights, built on `device` (no network)."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(max_length=arch["clip_length"])  # the shapes word-level tokenizer: same lengths
    vae_spec = dict(arch["vae"])
    blocks = len(vae_spec["block_out_channels"])
    with torch.device(device):
        pipe = StableDiffusion3Pipeline(
            transformer=transformer_for(arch),
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=arch["shift"]),
            vae=AutoencoderKL(**vae_spec, down_block_types=("DownEncoderBlock2D",) * blocks,
                              up_block_types=("UpDecoderBlock2D",) * blocks, use_quant_conv=False,
                              use_post_quant_conv=False),
            text_encoder=clip_text_tower(arch["clip_l"], tokenizer, arch["clip_length"]),
            tokenizer=tokenizer,
            text_encoder_2=clip_text_tower(arch["clip_g"], tokenizer, arch["clip_length"]),
            tokenizer_2=tokenizer,
            text_encoder_3=T5EncoderModel(T5Config(**arch["t5"], use_cache=False)),
            tokenizer_3=tokenizer,
        )
    return quiet(pipe.to(dtype=dtype))


def quiet(pipe):
    """The pipeline without its progress bar (a new pipeline object starts with one)."""
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameters(module) -> str:
    count = sum(p.numel() for p in module.parameters())
    return f"{count / 1e9:.2f}B" if count >= 1e8 else f"{count / 1e6:.2f}M"


def sampling_speed(pipe, arch: dict, prompts: list[str], repeats: int, synchronize,
                   fast_decoder: Path | None = None) -> list[str]:
    """Seconds per image, teacher vs student, for each row; with `fast_decoder` (an AutoencoderTiny folder of the
    same latent space), also the whole pipeline with both decoding through it (`ladd.pipelines.swap_vae`)."""
    size = arch["resolution"]
    common = {"height": size, "width": size, "max_sequence_length": arch["t5_length"]}
    settings = {"teacher": {**common, "num_inference_steps": 50, "guidance_scale": arch["guidance"]},
                "student": {**common, "num_inference_steps": 4, "guidance_scale": 0.0}}
    student_pipe = quiet(student_pipeline(pipe, pipe.transformer))  # same architecture: the same cost per step
    pipes = {"teacher": pipe, "student": student_pipe}

    def generate(pipes, output_type):
        def call(pipe, kwargs):
            return lambda i: pipe(prompts, generator=torch.Generator().manual_seed(i), output_type=output_type,
                                  **kwargs)
        return {name: call(p, settings[name]) for name, p in pipes.items()}

    def encode(guided: bool):  # what each pays before denoising: CFG encodes the negative prompt too
        return lambda i: pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=guided,
                                            max_sequence_length=arch["t5_length"])

    rows = {
        "full pipeline (PIL images)": generate(pipes, "pil"),
        "text encoding + denoising (latents)": generate(pipes, "latent"),
        "text encoding alone (CLIP-L, CLIP-G, T5-XXL)": {name: encode(kwargs["guidance_scale"] > 1)
                                                          for name, kwargs in settings.items()},
    }
    if fast_decoder is not None:
        fast = {name: quiet(swap_vae(type(p)(**p.components), fast_decoder)) for name, p in pipes.items()}
        rows["full pipeline, both decoding with a TAESD-sized AutoencoderTiny"] = generate(fast, "pil")
    lines = [
        f"Batch of {len(prompts)} prompt(s) at {size}x{size}, median of {repeats} alternating repeats after one "
        "warm-up (seconds per image):",
        "",
        f"| what is timed | teacher (50 steps, CFG {arch['guidance']}, shift {arch['shift']}) "
        "| student (4 consistency steps, guidance off) | speed-up |",
        "|---|---|---|---|",
    ]
    for label, steps in rows.items():
        seconds = alternating_medians(steps, repeats, warmup=1, synchronize=synchronize)
        t, s = (seconds[name] / len(prompts) for name in ("teacher", "student"))
        lines.append(f"| {label} | {t:.4f} | {s:.4f} | **{t / s:.1f}x** |")
    return lines


def save_fast_decoder(arch: dict, folder: Path) -> Path:
    """A random-weight AutoencoderTiny of TAESD's shape (TAESD3 for SD3) in the architecture's latent space."""
    vae = arch["vae"]
    AutoencoderTiny(**arch["fast_decoder"], latent_channels=vae["latent_channels"],
                    scaling_factor=vae["scaling_factor"], shift_factor=vae["shift_factor"]).save_pretrained(folder)
    return folder


def training_cost(teacher, unconditional, batch: dict, config_overrides: list[str], mixed_precision: str,
                  device: str, repeats: int, synchronize) -> list[str]:
    """LADD iteration vs plain fine-tuning iteration, for each recipe; `teacher` is a frozen fp32 transformer."""
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=device == "cpu")
    recipes = {
        "paper (adversarial only)": [],
        "shapes student (+ L_distill 0.2, teacher CFG 4)": ["distill.weight=0.2", "distill.guidance_scale=4.0"],
    }
    def ladd_step(models, optimizers, cfg):
        return lambda i: ladd_iteration(i, batch, models, optimizers, cfg, accelerator)

    steps, works = {}, {}
    student, shared = None, None
    for name, overrides in recipes.items():
        cfg = load_config(CONFIGS_DIR / "ladd-shapes.toml", [f"batch_size={len(batch['latents'])}",
                                                              f"mixed_precision={mixed_precision!r}",
                                                              "gradient_checkpointing=true", *config_overrides,
                                                              *overrides])
        student = student or init_student(cfg, teacher)  # one student for all recipes: memory, and equal work
        models, optimizers = assemble_training(cfg, teacher, student, unconditional)
        shared = shared or (optimizers.student, optimizers.student_lr)
        # one AdamW state for the student (16 bytes a parameter), whichever step runs
        optimizers.student, optimizers.student_lr = shared
        models.discriminator.to(device)
        steps[name] = ladd_step(models, optimizers, cfg)
        works[name] = ladd_work(cfg)
        heads = models.discriminator  # the same size for every recipe
    steps["plain"] = lambda i: plain_iteration(student, shared[0], batch, accelerator)
    seconds = alternating_medians(steps, repeats, synchronize=synchronize)
    shape = "x".join(str(d) for d in batch["latents"].shape[1:])
    lines = [
        f"Batch {len(batch['latents'])} of {shape} latents with {batch['prompt_embeds'].shape[1]} text tokens; "
        f"student = teacher = {parameters(student)}-parameter SD3Transformer2DModel (fp32 weights, {mixed_precision} "
        f"autocast, gradient checkpointing), {len(heads.heads)} discriminator heads "
        f"({sum(p.numel() for p in heads.parameters()) / 1e6:.1f}M parameters); median of {repeats} alternating "
        "iterations after two warm-ups:",
        "",
        "| iteration | seconds | vs plain |",
        "|---|---|---|",
        f"| plain diffusion fine-tuning (student fwd+bwd, AdamW) | {seconds['plain']:.3f} | 1.00x |",
    ]
    for name in recipes:
        lines.append(f"| LADD, {name}: {works[name]} | {seconds[name]:.3f} | **{seconds[name] / seconds['plain']:.2f}x** |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="sd3-medium")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=1, help="prompts per pipeline call (speed)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per speed row")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--train-overrides", nargs="*", default=[], help="ladd.train config overrides")
    parser.add_argument("--sampling-only", action="store_true", help="skip the training-cost section")
    parser.add_argument("--fast-decoder", action="store_true",
                        help="also time both pipelines decoding with a TAESD-sized AutoencoderTiny (as madebyollin/taesd3)")
    args = parser.parse_args(argv)
    diffusers.utils.logging.set_verbosity_error()  # prompt truncation and dtype-cast notices, once per call
    transformers.utils.logging.set_verbosity_error()
    arch = ARCHITECTURES[args.arch]
    cuda = args.device.startswith("cuda")
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    mixed_precision = "bf16" if cuda else "no"
    name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"# {args.arch} architecture, random weights · {name} · torch {torch.__version__}\n")

    pipe = random_sd3(arch, args.device, torch.bfloat16 if cuda else torch.float32)
    prompts = PROMPTS.read_text().splitlines()[: args.prompts]
    print(f"transformer {parameters(pipe.transformer)}, text encoders {parameters(pipe.text_encoder)} + "
          f"{parameters(pipe.text_encoder_2)} + {parameters(pipe.text_encoder_3)}, VAE {parameters(pipe.vae)} "
          "parameters\n")
    print("## Sampling speed\n")
    with tempfile.TemporaryDirectory() as scratch:
        fast_decoder = save_fast_decoder(arch, Path(scratch) / "fast-decoder") if args.fast_decoder else None
        print("\n".join(sampling_speed(pipe, arch, prompts, args.repeats, synchronize, fast_decoder)) + "\n")
    if args.sampling_only:
        return

    # Training: real text embeddings from the pipeline's own encoders, random latents at the sampling resolution.
    n = args.train_batch
    train_prompts = (PROMPTS.read_text().splitlines() * n)[:n]
    embeds, pooled = encode_prompts(pipe, train_prompts, arch["t5_length"])
    unconditional = tuple(u.float() for u in encode_prompts(pipe, [""], arch["t5_length"]))
    latent_size = arch["resolution"] // latent_downsampling(pipe.vae)
    batch = {"latents": torch.randn(n, arch["vae"]["latent_channels"], latent_size, latent_size, device=args.device),
             "prompt_embeds": embeds.float(), "pooled_prompt_embeds": pooled.float()}
    teacher = freeze(pipe.transformer.float())
    del pipe
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    print("## Training cost\n")
    print("\n".join(training_cost(teacher, unconditional, batch, args.train_overrides, mixed_precision, args.device,
                                  args.train_repeats, synchronize)))
    if cuda:
        print(f"\npeak GPU memory while training: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
