"""ladd.shallow: a shallower student from a deeper transformer with blocks dropped."""

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel

from ladd.checkpoint import export_student
from ladd.conditioning import predict_velocity
from ladd.data import LatentBuckets
from ladd.flow import denoise
from ladd.sampling import consistency_trajectory
from ladd.shallow import drop_blocks, kept_blocks, repair, repair_loss, repair_lr
from ladd.shallow import main as shallow_main


def tiny_transformer(num_layers=4, **config) -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=num_layers,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                 caption_projection_dim=16, pooled_projection_dim=8, pos_embed_max_size=8,
                                 **config).eval()


def forward(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def test_shallow_model_is_the_deep_one_with_the_dropped_blocks_skipped():
    deep = tiny_transformer()
    inputs = dict(hidden_states=torch.randn(2, 4, 8, 6), timestep=torch.tensor([250.0, 900.0]),
                  encoder_hidden_states=torch.randn(2, 5, 16), pooled_projections=torch.randn(2, 8))
    shallow = drop_blocks(deep, [0, 2])
    assert shallow.config.num_layers == 2 and deep.config.num_layers == 4
    # the same function, computed another way: the deep model with blocks 0 and 2 made identities
    for index in (0, 2):
        deep.transformer_blocks[index].register_forward_hook(
            lambda module, args, kwargs, output: (kwargs["encoder_hidden_states"], kwargs["hidden_states"]),
            with_kwargs=True)
    torch.testing.assert_close(forward(shallow, inputs), forward(deep, inputs))
    assert not torch.allclose(forward(shallow, inputs), forward(tiny_transformer(), inputs))


def test_dual_attention_blocks_are_renumbered_with_their_blocks():
    shallow = drop_blocks(tiny_transformer(dual_attention_layers=(1, 2)), [1])
    assert list(shallow.config.dual_attention_layers) == [1]
    assert shallow.transformer_blocks[1].attn2 is not None and shallow.transformer_blocks[0].attn2 is None


@pytest.mark.parametrize("drop, message", [
    ([3], "always stays"), ([-1], "always stays"), ([7], "always stays"), ([1, 1], "twice"),
])
def test_bad_drop_lists_are_value_errors(drop, message):
    with pytest.raises(ValueError, match=message):
        kept_blocks(4, drop)


def test_cli_writes_a_4_step_student_folder_sharing_the_teachers_components(smoke_teacher, tmp_path, capsys):
    config = dict(SD3Transformer2DModel.load_config(smoke_teacher / "transformer"), num_layers=3)
    deep = export_student(smoke_teacher, SD3Transformer2DModel.from_config(config), tmp_path / "deep")[0]
    out = tmp_path / "shallow"
    assert shallow_main(["--source", str(deep), "--drop", "1", "--teacher", str(smoke_teacher),
                         "--out", str(out)]) == 0
    assert "2 blocks" in capsys.readouterr().out
    student = SD3Transformer2DModel.from_pretrained(out / "transformer").state_dict()
    source = SD3Transformer2DModel.from_pretrained(deep / "transformer").state_dict()
    for name in ("proj_out.weight", "transformer_blocks.0.ff.net.2.weight"):
        torch.testing.assert_close(student[name], source[name])
    torch.testing.assert_close(student["transformer_blocks.1.attn.to_q.weight"],
                               source["transformer_blocks.2.attn.to_q.weight"])
    assert json.loads((out / "sampling_defaults.json").read_text())["num_inference_steps"] == 4
    assert (out / "vae").is_symlink()
    assert shallow_main(["--source", str(deep), "--drop", "2", "--teacher", str(smoke_teacher),
                         "--out", str(tmp_path / "bad")]) == 2
    assert "always stays" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert shallow_main(["--source", str(tmp_path / "missing"), "--drop", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "has no transformer/ folder" in capsys.readouterr().err


def smoke_deep_transformer(smoke_teacher, num_layers=3) -> SD3Transformer2DModel:
    torch.manual_seed(0)
    config = dict(SD3Transformer2DModel.load_config(smoke_teacher / "transformer"), num_layers=num_layers)
    return SD3Transformer2DModel.from_config(config)


def test_repair_regresses_the_shallow_model_onto_the_deep_one_which_never_changes(smoke_teacher, smoke_latents):
    deep = smoke_deep_transformer(smoke_teacher)
    before = {name: p.clone() for name, p in deep.state_dict().items()}
    shallow = drop_blocks(deep, [1])
    start = {name: p.clone() for name, p in shallow.state_dict().items()}
    losses = repair(shallow, deep, LatentBuckets(smoke_latents), iterations=40, batch_size=8, lr=1e-3)
    assert len(losses) == 40 and sum(losses[-10:]) < 0.7 * sum(losses[:10])
    for name, p in deep.state_dict().items():
        torch.testing.assert_close(p, before[name], rtol=0, atol=0)
    assert not torch.allclose(shallow.state_dict()["proj_out.weight"], start["proj_out.weight"])
    assert not shallow.training and not any(p.requires_grad for p in deep.parameters())
    # the same seed, the same run
    again = drop_blocks(smoke_deep_transformer(smoke_teacher), [1])
    other = drop_blocks(smoke_deep_transformer(smoke_teacher), [1])
    assert (repair(again, deep, LatentBuckets(smoke_latents), iterations=3, batch_size=8, lr=1e-3)
            == repair(other, deep, LatentBuckets(smoke_latents), iterations=3, batch_size=8, lr=1e-3))


def test_cli_repair_writes_the_student_and_its_loss_log(smoke_teacher, smoke_latents, tmp_path, capsys):
    deep = export_student(smoke_teacher, smoke_deep_transformer(smoke_teacher), tmp_path / "deep")[0]
    common = ["--source", str(deep), "--drop", "0", "--teacher", str(smoke_teacher)]
    out = tmp_path / "repaired"
    assert shallow_main(common + ["--out", str(out), "--repair-data", str(smoke_latents),
                                  "--repair-iterations", "3", "--batch-size", "4"]) == 0
    assert "over the last 50" in capsys.readouterr().out
    rows = (out / "repair_loss.csv").read_text().splitlines()
    assert rows[0] == "iteration,loss" and len(rows) == 4
    assert (out / "transformer").is_dir() and (out / "vae").is_symlink()
    assert shallow_main(common + ["--out", str(tmp_path / "bad"), "--repair-iterations", "3"]) == 2
    assert "needs --repair-data" in capsys.readouterr().err
    assert shallow_main(common + ["--out", str(tmp_path / "bad"), "--repair-data", str(tmp_path / "none"),
                                  "--repair-iterations", "3"]) == 2
    assert "no shards in" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_cli_init_goes_on_from_an_earlier_output_of_the_same_drop(smoke_teacher, smoke_latents, tmp_path, capsys):
    deep = export_student(smoke_teacher, smoke_deep_transformer(smoke_teacher), tmp_path / "deep")[0]
    common = ["--source", str(deep), "--drop", "0", "--teacher", str(smoke_teacher),
              "--repair-data", str(smoke_latents), "--batch-size", "4"]
    first, more, same = tmp_path / "first", tmp_path / "more", tmp_path / "same"
    assert shallow_main(common + ["--out", str(first), "--repair-iterations", "3"]) == 0
    assert shallow_main(common + ["--out", str(same), "--init", str(first), "--repair-iterations", "0"]) == 0
    assert shallow_main(common + ["--out", str(more), "--init", str(first), "--repair-iterations", "2",
                                  "--seed", "1", "--repair-schedule", "cosine"]) == 0
    weights = {folder: SD3Transformer2DModel.from_pretrained(folder / "transformer").state_dict()
               for folder in (first, same, more)}
    for name, tensor in weights[first].items():  # no repair: the earlier output as it was
        torch.testing.assert_close(weights[same][name], tensor, rtol=0, atol=0)
    assert not torch.equal(weights[more]["proj_out.weight"], weights[first]["proj_out.weight"])
    capsys.readouterr()
    # another drop of the same source has another depth: refused before anything is written
    assert shallow_main(["--source", str(deep), "--drop", "0", "1", "--teacher", str(smoke_teacher),
                         "--out", str(tmp_path / "bad"), "--init", str(first)]) == 2
    error = capsys.readouterr().err
    assert "is not the source with these blocks dropped" in error and "num_layers 2 vs 1" in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_repair_lr_is_constant_or_a_cosine_decay_to_zero():
    assert [repair_lr(i, 4, 1e-4) for i in range(4)] == [1e-4] * 4
    cosine = [repair_lr(i, 100, 1e-4, "cosine") for i in range(100)]
    assert cosine[0] == 1e-4 and cosine[50] == pytest.approx(0.5e-4) and 0 < cosine[-1] < 1e-7
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        repair_lr(0, 4, 1e-4, "step")


def test_repair_steps_at_its_schedules_learning_rate(smoke_teacher, smoke_latents, monkeypatch):
    deep = smoke_deep_transformer(smoke_teacher)
    seen, step = [], torch.optim.AdamW.step

    def recording_step(optimizer, *args, **kwargs):
        seen.append(optimizer.param_groups[0]["lr"])
        return step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    repair(drop_blocks(deep, [1]), deep, LatentBuckets(smoke_latents), iterations=3, batch_size=4, lr=1e-3,
           lr_schedule="cosine")
    assert seen == [repair_lr(i, 3, 1e-3, "cosine") for i in range(3)] and seen[0] > seen[1] > seen[2]
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        repair(drop_blocks(deep, [1]), deep, LatentBuckets(smoke_latents), iterations=3, lr_schedule="linear")
    assert len(seen) == 3  # refused before any step


def test_repair_loss_draws_its_timesteps_with_step_probs(smoke_teacher, smoke_latents):
    deep = smoke_deep_transformer(smoke_teacher)
    shallow = drop_blocks(deep, [1])
    batch = LatentBuckets(smoke_latents).batch(0, 4, 0)
    text, pooled = batch["prompt_embeds"], batch["pooled_prompt_embeds"]
    with torch.no_grad():
        def loss(step_probs):
            return repair_loss(shallow, deep, batch, torch.Generator().manual_seed(0), step_probs).item()

        # every sample at t = 1: the state is the noise, the target the deep model's 1-step x0 from it
        noise = torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(0))
        states, targets = consistency_trajectory(deep, noise, text, pooled, generator=torch.Generator())
        t = torch.ones(len(noise))
        by_hand = F.mse_loss(denoise(noise, t, predict_velocity(shallow, noise, t, text, pooled, None)), targets[0])
        assert loss((1.0, 0.0, 0.0, 0.0)) == pytest.approx(by_hand.item(), rel=1e-5)
        assert loss((0.0, 0.0, 0.0, 1.0)) != pytest.approx(by_hand.item(), rel=1e-3)
    with pytest.raises(ValueError, match="probs must be 4 non-negative numbers summing to 1"):
        repair(shallow, deep, LatentBuckets(smoke_latents), iterations=2, step_probs=(0.5, 0.5, 0.5, 0.5))
