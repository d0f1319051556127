"""Text, latent and image conditioning, computed exactly as the pipelines compute it at sampling time.

Training a teacher or a student with any other encoding would leave a gap between what the model learns from and
what the pipeline feeds it, so these helpers call the pipeline's own methods, and the image-to-image pipelines
(`ladd.edit_pipeline`, `ladd.inpaint_pipeline`) build their conditions with the functions here.

Image-to-image models condition by concatenation on the input channels (the paper's Sec. 5.2, after InstructPix2Pix
and SD inpainting): [noisy latent, source latent] for editing, [noisy latent, mask, masked-image latent] for
inpainting. A text-to-image model grows the extra input channels with zero weights (`expand_input_channels`), so
continued training starts from exactly the text-to-image model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel

from ladd.flow import to_model_timestep


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], max_sequence_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled_prompt_embeds) for a batch of prompts, via `pipe.encode_prompt`."""
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        prompt_3=None,
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
        device=pipe._execution_device,
    )
    return prompt_embeds, pooled


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the VAE's input range."""
    return images.float() / 127.5 - 1


def latents_from_vae(vae, latent_sample: torch.Tensor) -> torch.Tensor:
    """VAE latent -> the transformer's latent space (the inverse of the pipeline's decode step)."""
    return (latent_sample - vae.config.shift_factor) * vae.config.scaling_factor


def vae_from_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The transformer's latent space -> VAE latent, as `StableDiffusion3Pipeline` does before decoding."""
    return latents / vae.config.scaling_factor + vae.config.shift_factor


def expand_input_channels(transformer, extra_channels: int):
    """A copy of an SD3 transformer that takes `extra_channels` more input channels, whose patch-embedding weights
    start at zero: its output ignores them until training changes that. The output channels stay the latent's."""
    config = dict(transformer.config)
    config.update(in_channels=config["in_channels"] + extra_channels,
                  out_channels=config.get("out_channels") or config["in_channels"])
    expanded = SD3Transformer2DModel.from_config(config)
    state = transformer.state_dict()
    weight = state["pos_embed.proj.weight"]
    state["pos_embed.proj.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], extra_channels,
                                                                         *weight.shape[2:])], dim=1)
    expanded.load_state_dict(state)
    return expanded if weight.dtype == torch.float32 else expanded.to(weight.dtype)


def condition_channels(transformer) -> int:
    """How many input channels beyond the latent's a transformer takes (0 for text-to-image)."""
    return transformer.config.in_channels - (transformer.config.out_channels or transformer.config.in_channels)


def mask_to_latent(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """A pixel mask (B, 1, H, W), 1 = the region to fill, at the latent's resolution (nearest, as SD inpainting)."""
    return F.interpolate(mask.float(), size=latent_size, mode="nearest")


@torch.no_grad()
def inpaint_condition(vae, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[mask, masked-image latent] for images in [-1, 1] and pixel masks (1 = fill): the masked pixels are set to 0
    (mid-grey) before encoding, so the model never sees what it must fill."""
    masks = (masks > 0.5).to(images.dtype)
    latents = encode_images(vae, images * (1 - masks))
    return torch.cat([mask_to_latent(masks, tuple(latents.shape[-2:])).to(latents.dtype), latents], dim=1)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
    """Images in [-1, 1] -> normalised latents (the posterior mean unless `sample`)."""
    dist = vae.encode(images).latent_dist
    latent = dist.sample(generator) if sample else dist.mean
    return latents_from_vae(vae, latent)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> images in [-1, 1]."""
    return vae.decode(vae_from_latents(vae, latents), return_dict=False)[0].clamp(-1, 1)


def predict_velocity(
    transformer,
    latents: torch.Tensor,
    t: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    image_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """F(x_t, t) for a batch with per-sample t in [0, 1].

    `image_latents` (editing / inpainting conditions: a source image, a masked image and its mask) are concatenated
    to the input channels, the way InstructPix2Pix and SD inpainting models condition; such models are built with
    `in_channels = latent channels + condition channels`.
    """
    model_input = latents if image_latents is None else torch.cat([latents, image_latents], dim=1)
    return transformer(
        hidden_states=model_input,
        encoder_hidden_states=prompt_embeds,
        pooled_projections=pooled,
        timestep=to_model_timestep(t),
        return_dict=False,
    )[0]
