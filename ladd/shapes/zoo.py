"""The shapes world's model zoo: stock diffusers / transformers classes at tiny sizes, and their assembly into an
ordinary `StableDiffusion3Pipeline` folder.

Nothing here is a re-implementation: the tokenizer is a `CLIPTokenizer`, the text towers are
`CLIPTextModelWithProjection` (from a `CLIPModel` trained contrastively), the autoencoder is `AutoencoderKL` and
the denoiser is `SD3Transformer2DModel`. Real checkpoints load through exactly the same classes.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer

from ladd.pipelines import VAE_CLASSES, latent_downsampling
from ladd.sampling import write_sampling_defaults
from ladd.shapes.grammar import VOCABULARY

TOKENIZER_MAX_LENGTH = 20  # longest shapes prompt is 14 words + BOS/EOS
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# The T5 stream's length (`max_sequence_length`, recorded in sampling_defaults.json). With the scene encoder in the T5
# slot it is the longest prompt; a pipeline without one is sampled with 0, since the pipeline would otherwise pad
# the absent T5 stream with zero tokens the model never saw in training.
SCENE_SEQUENCE_LENGTH = 16


def max_sequence_length(pipe) -> int:
    return SCENE_SEQUENCE_LENGTH if pipe.text_encoder_3 is not None else 0


ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"  # unknown words fall back to these characters
END_OF_WORD = "</w>"


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """One BPE merge applied left to right: every adjacent occurrence of `pair` becomes one symbol."""
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def learn_bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE learning (Sennrich et al.) until every word is one symbol: merge the commonest adjacent pair, ties broken
    by the pair's text. Hugging Face's `BpeTrainer` breaks ties in hash order, which gave the same words different
    token ids in every process and so made the zoo build irreproducible."""
    segmented = [list(word[:-1]) + [word[-1] + END_OF_WORD] for word in words]
    merges = []
    while True:
        counts = Counter(pair for symbols in segmented for pair in zip(symbols, symbols[1:]))
        if not counts:
            return merges
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        segmented = [merge_pair(symbols, pair) for symbols in segmented]


def build_tokenizer(max_length: int = TOKENIZER_MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose merges make every word of the shapes grammar a single token; the same on every
    run. Unknown words fall back to characters (no crash on real prompts such as DrawBench's)."""
    merges = learn_bpe_merges(VOCABULARY)
    symbols = [BOS, EOS] + [c + suffix for c in ALPHABET for suffix in ("", END_OF_WORD)] + ["".join(m) for m in merges]
    vocab = {symbol: i for i, symbol in enumerate(dict.fromkeys(symbols))}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    unknown = [w for w in VOCABULARY if len(tokenizer.tokenize(w)) != 1]
    assert not unknown, f"words not single tokens: {unknown}"
    return tokenizer


def clip_config(tokenizer: CLIPTokenizer, cfg: dict) -> CLIPConfig:
    """Tiny CLIP: a text tower (the pipeline's text encoders) and a vision tower (the world's image encoder)."""
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg["text_width"],
        intermediate_size=4 * cfg["text_width"],
        num_hidden_layers=cfg["text_layers"],
        num_attention_heads=cfg["heads"],
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=cfg["embed_dim"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
    )
    vision = dict(
        hidden_size=cfg["vision_width"],
        intermediate_size=4 * cfg["vision_width"],
        num_hidden_layers=cfg["vision_layers"],
        num_attention_heads=cfg["heads"],
        image_size=cfg["image_size"],
        patch_size=cfg["patch_size"],
        projection_dim=cfg["embed_dim"],
        hidden_act="gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg["embed_dim"])


def clip_image_processor(image_size: int) -> CLIPImageProcessor:
    # Squash to a square instead of centre-cropping: a crop would cut objects off 96x64 images.
    return CLIPImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=3,
    )


def text_encoder_from_clip(clip: CLIPModel) -> CLIPTextModelWithProjection:
    """The pipeline's text encoder: CLIP's text tower and projection, weights copied from the trained CLIP."""
    encoder = CLIPTextModelWithProjection(clip.config.text_config)
    encoder.text_model.load_state_dict(clip.text_model.state_dict())
    encoder.text_projection.load_state_dict(clip.text_projection.state_dict())
    return encoder.eval()


def make_vae(cfg: dict) -> AutoencoderKL:
    widths = tuple(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths,
        layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"],
        norm_num_groups=cfg["norm_num_groups"],
        sample_size=cfg["sample_size"],
        mid_block_add_attention=cfg.get("mid_block_attention", False),
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def tiny_vae_config_error(cfg: dict) -> str | None:
    """What is wrong with a `[tiny_vae]` config that needs no VAE to see, or None."""
    if cfg["class"] not in VAE_CLASSES:  # what ladd.pipelines.swap_vae can load
        return f"tiny_vae.class is {cfg['class']!r}: {' or '.join(VAE_CLASSES)}"
    if cfg["class"] == "AutoencoderKL" and cfg["layers_per_block"] < 1:
        return "tiny_vae.layers_per_block must be >= 1: AutoencoderKL's encoder changes width inside its resnets"
    return None


def make_tiny_vae(cfg: dict, vae: AutoencoderKL) -> AutoencoderKL | AutoencoderTiny:
    """A small VAE for `vae`'s latent space that decodes several times faster on a CPU. It reads and writes the big
    VAE's raw latents, so it carries the same `scaling_factor` / `shift_factor` and drops into a pipeline in place of
    `vae` (`ladd.pipelines.swap_vae`). `cfg["class"]`:

    - "AutoencoderKL": the VAE's own architecture, slimmer. Its GroupNorm sees the whole image, as the big decoder's
      does, and the big VAE's latents lean on that (a colour can be written relative to the image's mean).
    - "AutoencoderTiny": TAESD-style plain conv + ReLU blocks, no normalisation: the fastest per channel, but each
      pixel sees only its neighbourhood."""
    if problem := tiny_vae_config_error(cfg):
        raise ValueError(problem)
    widths = tuple(cfg["block_out_channels"])
    factor = latent_downsampling(vae)
    if 2 ** (len(widths) - 1) != factor:
        raise ValueError(f"tiny_vae.block_out_channels needs {int(math.log2(factor)) + 1} entries to match the VAE's "
                         f"{factor}x downsampling")
    if cfg["class"] == "AutoencoderKL":
        slim = make_vae({**cfg, "latent_channels": vae.config.latent_channels, "sample_size": vae.config.sample_size})
        slim.register_to_config(scaling_factor=vae.config.scaling_factor, shift_factor=vae.config.shift_factor)
        return slim
    return AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=widths,
        decoder_block_out_channels=widths,
        num_encoder_blocks=tuple(cfg["encoder_blocks"]),
        num_decoder_blocks=tuple(cfg["decoder_blocks"]),
        latent_channels=vae.config.latent_channels,
        upsampling_scaling_factor=2,
        scaling_factor=vae.config.scaling_factor,
        shift_factor=vae.config.shift_factor,
    )


def make_transformer(cfg: dict, latent_channels: int, text_width: int, embed_dim: int) -> SD3Transformer2DModel:
    """SD3's MMDiT at a configurable depth. Text width is two CLIP towers side by side, as in SD3."""
    width = cfg["heads"] * cfg["head_dim"]
    return SD3Transformer2DModel(
        sample_size=cfg["sample_size"],
        patch_size=cfg["patch_size"],
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=cfg["depth"],
        attention_head_dim=cfg["head_dim"],
        num_attention_heads=cfg["heads"],
        joint_attention_dim=2 * text_width,
        caption_projection_dim=width,
        pooled_projection_dim=2 * embed_dim,
        pos_embed_max_size=cfg["pos_embed_max_size"],
        qk_norm=cfg.get("qk_norm"),
    )


def teacher_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # SD3 samples with shift=3.0 at 1024px; the shapes world's 64px images carry less redundancy, so no shift.
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def assemble_pipeline(tokenizer, text_encoder, vae, transformer, scheduler,
                      scene_encoder=None) -> StableDiffusion3Pipeline:
    """An SD3 pipeline with both CLIP slots filled by the shapes text tower and the T5 slot by the scene encoder
    (a `T5EncoderModel`, reading the same word-level tokenizer), or empty as SD3 allows."""
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder,
        tokenizer_2=tokenizer,
        text_encoder_3=scene_encoder,
        tokenizer_3=tokenizer if scene_encoder is not None else None,
    )


def save_pipeline(pipe: StableDiffusion3Pipeline, out_dir: str | Path, **sampling_defaults) -> Path:
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    write_sampling_defaults(out_dir, max_sequence_length=max_sequence_length(pipe), **sampling_defaults)
    return out_dir


# Sizes of the random-weight pipeline used by tests and by `bench` smoke runs.
TINY = {
    "clip": dict(text_width=32, text_layers=1, vision_width=32, vision_layers=1, heads=2, embed_dim=32,
                 image_size=64, patch_size=16),
    "vae": dict(block_out_channels=[8, 8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4,
                sample_size=64),
    "transformer": dict(depth=1, heads=2, head_dim=8, patch_size=2, sample_size=16, pos_embed_max_size=16),
}


def random_pipeline(out_dir: str | Path | None = None, seed: int = 0, depth: int = 1) -> StableDiffusion3Pipeline:
    """A tiny random-weight SD3 pipeline built with no network (tests, `bench` dry runs); saved if `out_dir`."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    clip = CLIPModel(clip_config(tokenizer, TINY["clip"]))
    vae = make_vae(TINY["vae"])
    transformer = make_transformer(
        dict(TINY["transformer"], depth=depth), 4, TINY["clip"]["text_width"], TINY["clip"]["embed_dim"]
    )
    pipe = assemble_pipeline(tokenizer, text_encoder_from_clip(clip), vae, transformer, teacher_scheduler())
    if out_dir is not None:
        save_pipeline(pipe, out_dir, num_inference_steps=4, guidance_scale=2.0, height=32, width=32)
    return pipe
