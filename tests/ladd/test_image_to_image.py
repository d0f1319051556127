"""Image-to-image conditioning: zero-initialised concat weights, nested guidance, and the edit and inpainting
pipelines in diffusers' style."""

import numpy as np
import pytest
import torch
from PIL import Image

from ladd.conditioning import condition_channels, expand_input_channels, inpaint_condition, predict_velocity
from ladd.edit_pipeline import StableDiffusion3EditPipeline
from ladd.flow import nested_guidance
from ladd.inpaint_pipeline import StableDiffusion3ChannelInpaintPipeline
from ladd.pipelines import load_pipeline
from ladd.shapes.zoo import random_pipeline


def test_nested_guidance_by_hand():
    uncond, image, full = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([4.0])
    # F(∅,∅) + s_I (F(I,∅) - F(∅,∅)) + s_T (F(I,T) - F(I,∅)) = 1 + 1.5 * 2 + 4 * 1
    assert nested_guidance(uncond, image, full, image_scale=1.5, text_scale=4.0).item() == 8.0
    assert nested_guidance(uncond, image, full, 1.0, 1.0).item() == 4.0  # both scales 1: the full condition


def test_zero_initialised_concat_weights_reproduce_the_text_to_image_model():
    pipe = random_pipeline()
    teacher = pipe.transformer
    expanded = expand_input_channels(teacher, extra_channels=5)
    assert expanded.config.in_channels == 9 and expanded.config.out_channels == 4 and condition_channels(expanded) == 5
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([0.7, 0.2])
    text, pooled = torch.randn(2, 13, teacher.config.joint_attention_dim), torch.randn(2, teacher.config.pooled_projection_dim)
    with torch.no_grad():
        before = predict_velocity(teacher, x, t, text, pooled)
        after = predict_velocity(expanded, x, t, text, pooled, image_latents=torch.randn(2, 5, 8, 8))
    torch.testing.assert_close(after, before)
    assert condition_channels(teacher) == 0


def edit_pipeline(tmp_path=None):
    pipe = random_pipeline()
    components = {**pipe.components, "transformer": expand_input_channels(pipe.transformer, 4)}
    edit = StableDiffusion3EditPipeline(**components)
    edit.set_progress_bar_config(disable=True)
    return edit


def calls(pipe):
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["hidden_states"].shape),
                                               with_kwargs=True)
    return seen


def test_the_edit_pipeline_runs_three_branches_when_guided_and_one_when_not():
    pipe = edit_pipeline()
    source = Image.new("RGB", (32, 32), (200, 30, 30))
    seen = calls(pipe)
    guided = pipe("make the circle blue", image=source, num_inference_steps=2, guidance_scale=3.0,
                  image_guidance_scale=1.5, max_sequence_length=0, output_type="latent",
                  generator=torch.Generator().manual_seed(0)).images
    assert [s[0] for s in seen] == [3, 3] and seen[0][1] == 8  # (∅,∅), (I,∅), (I,T); latent + source channels
    seen.clear()
    plain = pipe("make the circle blue", image=source, num_inference_steps=2, guidance_scale=0.0,
                 image_guidance_scale=0.0, max_sequence_length=0, output_type="latent",
                 generator=torch.Generator().manual_seed(0)).images
    assert [s[0] for s in seen] == [1, 1] and guided.shape == plain.shape == (1, 4, 8, 8)


def test_the_edit_pipeline_conditions_on_the_image(tmp_path):
    pipe = edit_pipeline()
    with torch.no_grad():  # give the source channels some weight, as training would
        pipe.transformer.pos_embed.proj.weight[:, 4:] = torch.randn_like(pipe.transformer.pos_embed.proj.weight[:, 4:])
    out = {}
    for colour in ((200, 30, 30), (30, 30, 200)):
        out[colour] = pipe("make it blue", image=Image.new("RGB", (32, 32), colour), num_inference_steps=1,
                           guidance_scale=0.0, max_sequence_length=0, output_type="latent",
                           generator=torch.Generator().manual_seed(0)).images
    assert not torch.allclose(*out.values())
    pipe.save_pretrained(tmp_path / "edit")
    loaded = load_pipeline(tmp_path / "edit")  # model_index.json names the class; the loader resolves it
    assert type(loaded) is StableDiffusion3EditPipeline and loaded.transformer.config.in_channels == 8


def test_the_inpainting_condition_hides_the_masked_pixels():
    vae = random_pipeline().vae
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    altered = image.clone()
    altered[..., 8:24, 8:24] = -image[..., 8:24, 8:24]
    a, b = inpaint_condition(vae, image, mask), inpaint_condition(vae, altered, mask)
    assert a.shape == (1, 5, 8, 8) and torch.equal(a, b)  # what is to be filled never reaches the model
    assert a[0, 0].sum() == 16 and set(a[0, 0].unique().tolist()) == {0.0, 1.0}  # the mask at latent resolution


@pytest.mark.parametrize("guidance,branches", [(4.0, 2), (0.0, 1)])
def test_the_inpainting_pipeline_takes_any_latent_channel_count(guidance, branches, tmp_path):
    base = random_pipeline()
    pipe = StableDiffusion3ChannelInpaintPipeline(**{**base.components,
                                                     "transformer": expand_input_channels(base.transformer, 5)})
    pipe.set_progress_bar_config(disable=True)
    seen = calls(pipe)
    mask = Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), 8))
    image = pipe("a red circle", image=Image.new("RGB", (32, 32), (0, 200, 0)), mask_image=mask,
                 num_inference_steps=2, guidance_scale=guidance, max_sequence_length=0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32) and [s[:2] for s in seen] == [(branches, 9)] * 2
    pipe.save_pretrained(tmp_path / "inpaint")
    assert type(load_pipeline(tmp_path / "inpaint")) is StableDiffusion3ChannelInpaintPipeline


@pytest.mark.parametrize("name, pipeline_class, channels", [
    ("shapes-edit-turbo", "StableDiffusion3EditPipeline", 8),
    ("shapes-inpaint-turbo", "StableDiffusion3ChannelInpaintPipeline", 9)])
def test_the_committed_image_to_image_students_load_offline_with_the_consistency_sampler(name, pipeline_class,
                                                                                        channels):
    from ladd.paths import MODELS_DIR
    from ladd.pipelines import load_pipeline
    import json

    pipe = load_pipeline(MODELS_DIR / name)
    assert type(pipe).__name__ == pipeline_class and pipe.transformer.config.in_channels == channels
    assert pipe.transformer.dtype == torch.float32  # float16 on disk
    table = json.loads((MODELS_DIR / name / "sampling_defaults.json").read_text())["consistency_sigmas"]
    assert table["1"] == [1.0] and table["4"] == [1.0, 0.75, 0.5, 0.25]
