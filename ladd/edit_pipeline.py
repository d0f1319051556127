"""An SD3 instruction-editing pipeline: the input image's latent concatenated on the transformer's input channels,
guided over image and text (InstructPix2Pix's nested classifier-free guidance; the LADD paper's SD3-edit, Sec. 5.2).

    pipe = StableDiffusion3EditPipeline.from_pretrained("models/shapes-sd3-edit")
    edited = pipe("make the circle blue", image=source, guidance_scale=4.0, image_guidance_scale=1.5).images[0]

The transformer takes `latent channels + latent channels` inputs (`ladd.conditioning.expand_input_channels`). With
`guidance_scale` and `image_guidance_scale` both at most 1 (a distilled student), each step is one forward on
(image, text); otherwise three: F(∅, ∅), F(I, ∅) and F(I, T), combined by `ladd.flow.nested_guidance` (∅ text is
the empty prompt, ∅ image a zero latent, as in training). Everything else is `StableDiffusion3Pipeline`'s.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import retrieve_timesteps

from ladd.conditioning import encode_images
from ladd.flow import nested_guidance


class StableDiffusion3EditPipeline(StableDiffusion3Pipeline):
    condition_inputs = ("image",)  # what a sample is conditioned on besides text (`ladd.synth` reads it)

    @torch.no_grad()
    def prepare_condition(self, image: PipelineImageInput, height: int | None = None, width: int | None = None):
        """The input image's latent (the posterior's mean, as in training): the channels concatenated to the noisy
        latent."""
        image = self.image_processor.preprocess(image, height=height, width=width)
        return encode_images(self.vae, image.to(self._execution_device, self.vae.dtype))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PipelineImageInput = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        sigmas: list[float] | None = None,
        guidance_scale: float = 4.0,
        image_guidance_scale: float = 1.5,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        max_sequence_length: int = 256,
    ):
        if image is None:
            raise ValueError("an edit needs the input `image`")
        device = self._execution_device
        image_latents = self.prepare_condition(image, height, width)
        height, width = (side * self.vae_scale_factor for side in image_latents.shape[-2:])
        text_scale, image_scale = max(guidance_scale, 1.0), max(image_guidance_scale, 1.0)
        guided = guidance_scale > 1 or image_guidance_scale > 1

        # 1. text: the instruction, and the empty prompt for the unconditional branches
        prompt_embeds, negative_embeds, pooled, negative_pooled = self.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, do_classifier_free_guidance=guided, device=device,
            num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length)
        batch = prompt_embeds.shape[0]

        # 2. the input image's latent, and the zero "no image" latent
        image_latents = image_latents.to(prompt_embeds.dtype).repeat_interleave(batch // len(image_latents), dim=0)
        if guided:  # branches: (∅ text, ∅ image), (∅ text, I), (T, I)
            prompt_embeds = torch.cat([negative_embeds, negative_embeds, prompt_embeds])
            pooled = torch.cat([negative_pooled, negative_pooled, pooled])
            image_latents = torch.cat([torch.zeros_like(image_latents), image_latents, image_latents])

        # 3. the starting noise and the schedule
        latents = self.prepare_latents(batch, self.transformer.config.out_channels, height, width,
                                       prompt_embeds.dtype, device, generator, latents)
        timesteps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, device, sigmas=sigmas)

        # 4. denoising
        for t in self.progress_bar(timesteps):
            branches = 3 if guided else 1
            model_input = torch.cat([torch.cat([latents] * branches), image_latents], dim=1)
            velocity = self.transformer(hidden_states=model_input, timestep=t.expand(len(model_input)),
                                        encoder_hidden_states=prompt_embeds, pooled_projections=pooled,
                                        return_dict=False)[0]
            if guided:
                velocity = nested_guidance(*velocity.chunk(3), image_scale, text_scale)
            latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]

        # 5. decoding
        if output_type == "latent":
            images = latents
        else:
            latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
            images = self.image_processor.postprocess(self.vae.decode(latents, return_dict=False)[0],
                                                      output_type=output_type)
        self.maybe_free_model_hooks()
        return StableDiffusion3PipelineOutput(images=images) if return_dict else (images,)
