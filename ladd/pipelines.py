"""Loading diffusers pipeline folders (including SD3 folders saved without T5), and giving a pipeline another VAE."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DiffusionPipeline
from diffusers.models.autoencoders.vae import DecoderOutput


def null_components(pipeline_dir: str | Path) -> dict:
    """Components recorded as `[null, null]` in model_index.json (e.g. SD3 without T5).

    diffusers saves such folders but will not load them unless the missing parts are passed explicitly as None
    (the documented `text_encoder_3=None, tokenizer_3=None` call), so we pass them.
    """
    index = json.loads((Path(pipeline_dir) / "model_index.json").read_text())
    return {
        name: None
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value[0] is None
    }


def cached_hub_file(repo_id: str, filename: str) -> str | None:
    """Path of `filename` of `repo_id` in the local Hugging Face cache, or None. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) and os.path.isfile(found) else None


def pipeline_folder(name: str | Path) -> Path:
    """A local diffusers pipeline folder, or a Hugging Face repo id already in the local cache (e.g. SD3 downloaded
    once with `huggingface-cli download`); the cache's snapshot folder pins the revision. Training never downloads:
    a ValueError says what is missing and how to get it."""
    path = Path(name)
    if (path / "model_index.json").is_file():
        return path
    if path.exists() or not re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", str(name)):  # "owner/name", not a path
        raise ValueError(f"{name} is not a diffusers pipeline folder (no model_index.json)")
    index = cached_hub_file(str(name), "model_index.json")
    if index is None:
        raise ValueError(f"{name} is neither a local pipeline folder nor in the Hugging Face cache: accept its "
                         f"licence on https://huggingface.co/{name} if it is gated, log in with `huggingface-cli "
                         f"login`, download it with `huggingface-cli download {name}` (or `--local-dir DIR`), then "
                         f"pass the repo id or DIR")
    return Path(index).parent


def image_to_image_pipelines() -> dict[str, type]:
    """This toolkit's pipeline classes by name (diffusers resolves only its own names from model_index.json)."""
    from ladd.edit_pipeline import StableDiffusion3EditPipeline
    from ladd.inpaint_pipeline import StableDiffusion3ChannelInpaintPipeline

    return {cls.__name__: cls for cls in (StableDiffusion3EditPipeline, StableDiffusion3ChannelInpaintPipeline)}


def pipeline_class_of(pipeline_dir: str | Path):
    """The class a folder's model_index.json names, if it is one of `image_to_image_pipelines`, else
    DiffusionPipeline (which resolves diffusers' own names)."""
    name = json.loads((Path(pipeline_dir) / "model_index.json").read_text()).get("_class_name")
    return image_to_image_pipelines().get(name, DiffusionPipeline)


def load_pipeline(pipeline_dir: str | Path, pipeline_class=None, **kwargs):
    """`pipeline_class.from_pretrained` on a local folder, with its null components passed as None; by default the
    class its model_index.json names (`pipeline_class_of`)."""
    pipeline_class = pipeline_class or pipeline_class_of(pipeline_dir)
    kwargs = {**null_components(pipeline_dir), **kwargs}
    return pipeline_class.from_pretrained(str(pipeline_dir), **kwargs)


VAE_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}


def vae_class(vae_dir: str | Path):
    """The VAE class a folder's config names; a ValueError unless it is one of VAE_CLASSES. Reads no weights, so
    callers can check a folder before any work."""
    config_path = Path(vae_dir) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{vae_dir} is not a VAE folder (no config.json)")
    name = json.loads(config_path.read_text()).get("_class_name")
    if name not in VAE_CLASSES:
        raise ValueError(f"{vae_dir} is not a VAE folder (its config names {name or 'no diffusers class'}, not "
                         f"{' or '.join(VAE_CLASSES)})")
    return VAE_CLASSES[name]


def load_vae(vae_dir: str | Path, **kwargs):
    """An AutoencoderKL or AutoencoderTiny folder (e.g. a slimmer or TAESD-style VAE), by the class its config names."""
    return vae_class(vae_dir).from_pretrained(str(vae_dir), **kwargs)


def latent_downsampling(vae) -> int:
    """Image pixels per latent pixel along each side."""
    if isinstance(vae, AutoencoderTiny):
        return vae.config.upsampling_scaling_factor ** (len(vae.config.decoder_block_out_channels) - 1)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def swap_vae(pipe, vae_dir: str | Path):
    """Give `pipe` another VAE of the same latent space to decode several times faster: a slimmer AutoencoderKL
    (`models/shapes-slim-vae`) or a TAESD-style AutoencoderTiny (madebyollin/taesd3 for SD3).

    The transformer's latent space is fixed by the VAE it was trained with, so the new one must agree on channels,
    downsampling (diffusers sizes latents by the `vae_scale_factor` measured when the pipeline was built) and
    `scaling_factor` / `shift_factor`; anything else is a ValueError, before `pipe` changes. The VAE is installed
    channels-last, decoding in slices of DECODE_SLICE latents."""
    vae = load_vae(vae_dir, torch_dtype=pipe.vae.dtype)
    old = pipe.vae.config
    mismatches = [
        f"{what} {theirs} vs the model's {ours}"
        for what, theirs, ours in (
            ("latent channels", vae.config.latent_channels, old.latent_channels),
            ("downsampling", latent_downsampling(vae), pipe.vae_scale_factor),
            ("scaling_factor", round(vae.config.scaling_factor, 4), round(old.scaling_factor, 4)),
            ("shift_factor", round(vae.config.get("shift_factor") or 0.0, 4), round(old.get("shift_factor") or 0.0, 4)),
        )
        if theirs != ours
    ]
    if mismatches:
        raise ValueError(f"VAE {vae_dir} does not share the model's latent space: {'; '.join(mismatches)}")
    # channels-last: measured 1.5x (AutoencoderKL) to 2x (AutoencoderTiny) faster decoding on CPU
    pipe.vae = decode_in_slices(vae.to(pipe.vae.device, memory_format=torch.channels_last))
    return pipe


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def check_lora_folder(folder: str | Path) -> Path:
    """A LoRA folder in diffusers' format (what `save_lora_weights` writes, e.g. `ladd.dpo`'s OUT/lora)."""
    folder = Path(folder)
    if not (folder / LORA_WEIGHTS).is_file():
        raise ValueError(f"{folder} holds no {LORA_WEIGHTS} (a LoRA folder in diffusers' format is expected)")
    return folder


def fuse_lora(pipe, folder: str | Path, scale: float = 1.0):
    """Merge a LoRA into the pipeline's weights at `scale` with stock diffusers calls (load_lora_weights,
    fuse_lora, unload_lora_weights): the pipeline then samples at its usual cost, with no adapter left."""
    if not hasattr(pipe, "load_lora_weights"):
        raise ValueError(f"{type(pipe).__name__} does not load LoRA weights")
    pipe.load_lora_weights(check_lora_folder(folder), adapter_name="lora")
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()
    return pipe


DECODE_SLICE = 32


def decode_in_slices(vae, slice_size: int = DECODE_SLICE):
    """Make `vae.decode` decode a batch in slices of at most `slice_size` latents (same images, same output type).

    At 64 latents and more, diffusers' Upsample2D copies its channels-last input to a contiguous one (a workaround
    for a CUDA kernel, diffusers#984), and nearest upsampling of that on CPU is slow: the slim decoder takes a third
    longer per image for a batch of 64 than for two of 32 (`experiments/vae_fidelity.py`). Unlike diffusers'
    `enable_slicing` (one latent at a time), slices of 32 keep the batch's efficiency."""
    decode = vae.decode

    @functools.wraps(decode)
    def sliced_decode(latents, *args, return_dict: bool = True, **kwargs):
        images = torch.cat([decode(part, *args, return_dict=False, **kwargs)[0] for part in latents.split(slice_size)])
        return DecoderOutput(sample=images) if return_dict else (images,)

    vae.decode = sliced_decode
    return vae


def _component_contents(folder: Path) -> dict[str, object]:
    """Every file of a component; JSON configs without the keys that only record where they were loaded from."""
    contents = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k not in ("_name_or_path", "name_or_path")}
            contents[str(path.relative_to(folder))] = data
        else:
            contents[str(path.relative_to(folder))] = path.read_bytes()
    return contents


def link_components(pipeline_dir: str | Path, reference_dir: str | Path, names: list[str],
                    replaces: str | Path | None = None) -> list[str]:
    """Replace the named component folders with relative symlinks to the reference pipeline's.

    A link points at the folder that holds the files (a reference's own link is followed), so a student does not
    need its teacher's folder; `replaces` is the folder this one will replace (a model rewritten in place), and
    nothing links into it.
    """
    pipeline_dir, reference_dir = Path(pipeline_dir), Path(reference_dir)
    linked = []
    for name in names:
        component, twin = pipeline_dir / name, reference_dir / name
        if not twin.is_dir() or (replaces is not None and twin.resolve().is_relative_to(Path(replaces).resolve())):
            continue
        if component.is_symlink():
            component.unlink()
        else:
            shutil.rmtree(component)
        component.symlink_to(os.path.relpath(twin.resolve(), pipeline_dir.resolve()))
        linked.append(name)
    return linked


def link_identical_components(pipeline_dir: str | Path, reference_dir: str | Path) -> list[str]:
    """Replace component folders identical to the reference pipeline's (same weights and configs) with relative
    symlinks (`link_components`).

    A distilled student shares its teacher's VAE, text encoders and tokenizers; linking them keeps a repository
    that holds both (the committed shapes zoo) small, while each folder still loads on its own.
    """
    pipeline_dir, reference_dir = Path(pipeline_dir), Path(reference_dir)
    identical = [p.name for p in sorted(pipeline_dir.iterdir()) if p.is_dir() and not p.is_symlink()
                 and (reference_dir / p.name).is_dir()
                 and _component_contents(p) == _component_contents((reference_dir / p.name).resolve())]
    return link_components(pipeline_dir, reference_dir, identical)
