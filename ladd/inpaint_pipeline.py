"""An SD3 inpainting pipeline with channel-concatenated conditioning, for any latent channel count (the LADD paper's
SD3-inpainting, Sec. 5.2; diffusers' `StableDiffusion3InpaintPipeline` takes only 16- or 33-channel transformers).

    pipe = StableDiffusion3ChannelInpaintPipeline.from_pretrained("models/shapes-sd3-inpaint")
    filled = pipe("a red circle left of a blue square", image=image, mask_image=mask).images[0]

The transformer takes [noisy latent, mask, masked-image latent] on its input channels (`ladd.conditioning
.inpaint_condition`; white in `mask_image` marks what to fill). Guidance is over text only, the image condition
present in both branches (the model was trained with text dropout only). The output is the model's whole image:
nothing is pasted back, so metrics see what the model made outside the mask too.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import retrieve_timesteps

from ladd.conditioning import inpaint_condition
from ladd.flow import classifier_free_guidance


class StableDiffusion3ChannelInpaintPipeline(StableDiffusion3Pipeline):
    condition_inputs = ("image", "mask_image")  # what a sample is conditioned on besides text (`ladd.synth` reads it)

    @torch.no_grad()
    def prepare_condition(self, image: PipelineImageInput, mask_image: PipelineImageInput, height: int | None = None,
                          width: int | None = None):
        """[mask, masked-image latent] (white in `mask_image` = fill): the channels concatenated to the noisy latent."""
        image = self.image_processor.preprocess(image, height=height, width=width)
        height, width = image.shape[-2:]
        mask_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_normalize=False,
                                           do_binarize=True, do_convert_grayscale=True)
        mask = mask_processor.preprocess(mask_image, height=height, width=width)
        device, dtype = self._execution_device, self.vae.dtype
        return inpaint_condition(self.vae, image.to(device, dtype), mask.to(device, dtype))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: PipelineImageInput = None,
        mask_image: PipelineImageInput = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        sigmas: list[float] | None = None,
        guidance_scale: float = 4.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        max_sequence_length: int = 256,
    ):
        if image is None or mask_image is None:
            raise ValueError("inpainting needs `image` and `mask_image`")
        device = self._execution_device
        condition = self.prepare_condition(image, mask_image, height, width)
        height, width = (side * self.vae_scale_factor for side in condition.shape[-2:])
        guided = guidance_scale > 1

        # 1. text, and the empty prompt for the unconditional branch
        prompt_embeds, negative_embeds, pooled, negative_pooled = self.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, do_classifier_free_guidance=guided, device=device,
            num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length)
        batch = prompt_embeds.shape[0]

        # 2. the condition, the same for both branches
        condition = condition.to(prompt_embeds.dtype).repeat_interleave(batch // len(condition), dim=0)
        if guided:
            prompt_embeds, pooled = torch.cat([negative_embeds, prompt_embeds]), torch.cat([negative_pooled, pooled])
            condition = torch.cat([condition, condition])

        # 3. the starting noise and the schedule
        latents = self.prepare_latents(batch, self.transformer.config.out_channels, height, width,
                                       prompt_embeds.dtype, device, generator, latents)
        timesteps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, device, sigmas=sigmas)

        # 4. denoising
        for t in self.progress_bar(timesteps):
            model_input = torch.cat([torch.cat([latents] * (2 if guided else 1)), condition], dim=1)
            velocity = self.transformer(hidden_states=model_input, timestep=t.expand(len(model_input)),
                                        encoder_hidden_states=prompt_embeds, pooled_projections=pooled,
                                        return_dict=False)[0]
            if guided:
                velocity = classifier_free_guidance(*velocity.chunk(2), guidance_scale)
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
