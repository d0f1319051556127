"""Text and latent conditioning, computed exactly as the stock SD3 pipeline computes it at sampling time.

Training a teacher or a student with any other encoding would leave a gap between what the model learns from and
what `StableDiffusion3Pipeline.__call__` feeds it, so these helpers call the pipeline's own methods.
"""

from __future__ import annotations

import torch

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
