"""Diffusion-DPO through a LoRA: the loss by hand, its value at initialisation, a frozen reference, the preference
table readers, and a LoRA that stock diffusers applies to the teacher and to a student."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from PIL import Image

from ladd.cli import LaddError
from ladd.dpo import DpoConfig, add_lora, dpo_iteration, dpo_loss, main
from ladd.paths import MODELS_DIR
from ladd.preferences import read_preferences, write_preferences
from ladd.shapes.preferences import main as pairs_main
from ladd.shapes.zoo import random_pipeline


def test_the_loss_by_hand_and_its_sign():
    ref_w, ref_l = torch.tensor([1.0]), torch.tensor([1.0])
    at_reference = dpo_loss(ref_w, ref_l, ref_w, ref_l, beta=10.0)
    assert at_reference.item() == pytest.approx(math.log(2))
    better = dpo_loss(torch.tensor([0.9]), ref_l, ref_w, ref_l, beta=10.0)  # the preferred error fell
    worse = dpo_loss(ref_w, torch.tensor([0.9]), ref_w, ref_l, beta=10.0)  # the rejected error fell
    assert better < at_reference < worse
    # -log sigmoid(-beta/2 * ((0.9 - 1) - 0)) = -log sigmoid(0.5)
    assert better.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))
    weighted = dpo_loss(torch.tensor([0.9, 1.0]), torch.tensor([1.0, 0.9]), torch.ones(2), torch.ones(2), 10.0,
                        weight=torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx((3 * better.item() + worse.item()) / 4)


def batch_of_pairs(transformer, n=3):
    g = torch.Generator().manual_seed(0)
    return {"preferred": torch.randn(n, 4, 8, 8, generator=g), "rejected": torch.randn(n, 4, 8, 8, generator=g),
            "prompt_embeds": torch.randn(n, 12, transformer.config.joint_attention_dim, generator=g),
            "pooled_prompt_embeds": torch.randn(n, transformer.config.pooled_projection_dim, generator=g)}


def test_at_initialisation_the_model_is_the_reference_and_the_loss_is_log_2():
    transformer = add_lora(random_pipeline().transformer, rank=4)
    loss, stats = dpo_iteration(transformer, batch_of_pairs(transformer), DpoConfig(beta=1000.0),
                                generator=torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and stats["implicit_reward_margin"] == 0


def test_training_moves_only_the_lora_and_the_reference_stays_frozen():
    transformer = add_lora(random_pipeline().transformer, rank=4)
    base = {k: v.clone() for k, v in transformer.state_dict().items() if "lora" not in k}
    batch = batch_of_pairs(transformer)
    transformer.disable_adapters()
    with torch.no_grad():
        reference = transformer(hidden_states=batch["preferred"], encoder_hidden_states=batch["prompt_embeds"],
                                pooled_projections=batch["pooled_prompt_embeds"], timestep=torch.full((3,), 500.0))[0]
    transformer.enable_adapters()
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    assert trainable and all(any(t is p for t in trainable) for n, p in transformer.named_parameters() if "lora" in n)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    for i in range(5):
        loss, _ = dpo_iteration(transformer, batch, DpoConfig(beta=1000.0), generator=torch.Generator().manual_seed(i))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(v, transformer.state_dict()[k]) for k, v in base.items())  # base weights untouched
    transformer.disable_adapters()
    with torch.no_grad():
        again = transformer(hidden_states=batch["preferred"], encoder_hidden_states=batch["prompt_embeds"],
                            pooled_projections=batch["pooled_prompt_embeds"], timestep=torch.full((3,), 500.0))[0]
    torch.testing.assert_close(again, reference)  # the reference is the frozen teacher
    transformer.enable_adapters()
    loss, stats = dpo_iteration(transformer, batch, DpoConfig(beta=1000.0), generator=torch.Generator().manual_seed(9))
    assert loss.item() < math.log(2) and stats["accuracy"] > 0.5  # the pairs it saw are now preferred


def test_pick_a_pic_rows_become_pairs_and_ties_are_dropped(tmp_path):
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"{name}.png")
    pd.DataFrame({"caption": ["x", "y", "z"], "image_0": ["a.png", "a.png", "a.png"],
                  "image_1": ["b.png", "b.png", "b.png"], "label_0": [1.0, 0.0, 0.5]}).to_csv(tmp_path / "pick.csv")
    pairs = read_preferences(tmp_path / "pick.csv")
    assert list(pairs["prompt"]) == ["x", "y"] and pairs["preferred"][0].endswith("a.png")
    assert pairs["preferred"][1].endswith("b.png") and set(pairs["source"]) == {"pick-a-pic"}
    written = write_preferences(pairs, tmp_path / "pairs.parquet")
    assert read_preferences(written).equals(pairs)
    (tmp_path / "bad.csv").write_text("prompt,chosen\nx,a.png\n")
    with pytest.raises(LaddError, match="lacks the columns"):
        read_preferences(tmp_path / "bad.csv")


def stock_latents(folder, lora=None, scale=1.0):
    pipe = StableDiffusion3Pipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(lora, adapter_name="dpo")
        pipe.set_adapters(["dpo"], adapter_weights=[scale])
    torch.manual_seed(0)  # a student's consistency sampler renoises from the global RNG
    return pipe("a red circle", num_inference_steps=2, guidance_scale=0.0, max_sequence_length=16,
                output_type="latent", generator=torch.Generator().manual_seed(0)).images


def test_evaluator_pairs_train_a_lora_that_stock_diffusers_applies_to_teacher_and_student(tmp_path):
    """On the committed teacher (whose images the evaluator can pass) and its committed LADD student."""
    teacher, student = MODELS_DIR / "shapes-sd3", MODELS_DIR / "shapes-turbo"
    assert pairs_main(["--model", str(teacher), "--prompts", "8", "--samples", "3", "--steps", "8",
                       "--out", str(tmp_path / "pairs" / "pairs.parquet")]) == 0
    pairs = read_preferences(tmp_path / "pairs" / "pairs.parquet")
    assert len(pairs) > 0 and set(pairs["source"]) == {"evaluator"}
    out = tmp_path / "dpo"
    assert main([f'model="{teacher}"', f'preferences="{tmp_path / "pairs" / "pairs.parquet"}"', f'out="{out}"',
                 "iterations=4", "batch_size=2", "rank=4", "lr=1e-2", "checkpoint_every=2"]) == 0
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert len(pd.read_csv(out / "metrics.csv")) >= 2
    plain, with_lora = stock_latents(teacher), stock_latents(teacher, out / "lora")
    assert not torch.allclose(plain, with_lora)  # the LoRA changes the teacher ...
    torch.testing.assert_close(stock_latents(teacher, out / "lora", scale=0.0), plain)  # ... and not at scale 0
    torch.testing.assert_close(stock_latents(out / "pipeline"), with_lora, atol=1e-4, rtol=1e-4)  # fused = applied
    # the paper's reapplication: the same LoRA on a LADD student of the teacher's architecture
    assert not torch.allclose(stock_latents(student), stock_latents(student, out / "lora"))
    torch.testing.assert_close(stock_latents(student, out / "lora", scale=0.0), stock_latents(student))
