"""The zoo: tokenizer on disk, and a smoke build (the real build's code at tiny sizes) giving loadable models."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusion3Pipeline
from transformers import AutoTokenizer, CLIPModel, CLIPProcessor, CLIPTokenizer, T5EncoderModel

from ladd.data import LatentBuckets
from ladd.logs import MetricsLog
from ladd.pipelines import load_pipeline, swap_vae
from ladd.sampling import read_sampling_defaults
from ladd.conditioning import encode_prompts
from ladd.shapes import build
from ladd.shapes.build import PromptTable
from ladd.shapes.build import main as build_main
from ladd.shapes.build import train_tiny_vae
from ladd.conditioning import to_model_range
from ladd.shapes.data import render_pool
from ladd.shapes.grammar import VOCABULARY
from ladd.shapes.render import BUCKETS
from ladd.shapes.zoo import (SCENE_SEQUENCE_LENGTH, build_tokenizer, learn_bpe_merges, make_tiny_vae,
                             max_sequence_length)
from tests.conftest import cli_exit_code


def test_tokenizer_is_word_level_and_loads_from_disk(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    for loaded in (CLIPTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert isinstance(loaded, CLIPTokenizer)
        ids = loaded("two small red circles left of a pink cross")["input_ids"]
        assert len(ids) == 2 + 9  # BOS, one token per word, EOS
        assert all(len(loaded.tokenize(word)) == 1 for word in VOCABULARY)
        # words outside the grammar degrade to characters instead of failing
        assert len(loaded.tokenize("zebra")) > 1


def test_bpe_merges_take_the_commonest_pair_first_and_break_ties_by_text():
    # "ab" and "cb</w>" each occur in two words; "ab" wins the tie on text, then "ab" + "c" ...
    merges = learn_bpe_merges(["abc", "abd", "cb", "cb"])
    assert merges[:2] == [("a", "b"), ("c", "b</w>")]
    assert {"".join(m) for m in merges} >= {"abc</w>", "abd</w>", "cb</w>"}


def test_smoke_build_is_byte_identical_in_a_fresh_process(smoke_zoo, tmp_path):
    """Every stage is seeded; a tokenizer trained with hash-order tie-breaking once gave each process other token
    ids, so the text encoders (and the teacher reading them) came out different on every build."""
    out, _ = smoke_zoo
    command = [sys.executable, "-m", "ladd.shapes.build", "--smoke", "--out", str(tmp_path / "zoo"),
               "--work", str(tmp_path / "work")]
    subprocess.run(command, check=True, capture_output=True)
    weights = sorted(p.relative_to(out) for p in out.rglob("*.safetensors"))
    assert len(weights) >= 5
    for path in weights:
        assert (tmp_path / "zoo" / path).read_bytes() == (out / path).read_bytes(), path
    tokenizer = Path("shapes-sd3") / "tokenizer" / "tokenizer.json"
    assert (tmp_path / "zoo" / tokenizer).read_text() == (out / tokenizer).read_text()


def test_smoke_build_gives_a_stock_sd3_pipeline_for_every_bucket(smoke_zoo):
    out, _ = smoke_zoo
    folder = out / "shapes-sd3"
    pipe = StableDiffusion3Pipeline.from_pretrained(folder)  # stock loader: all three text slots are on disk
    assert isinstance(pipe.text_encoder_3, T5EncoderModel)
    defaults = read_sampling_defaults(folder)
    assert defaults["max_sequence_length"] == SCENE_SEQUENCE_LENGTH
    for width, height in BUCKETS:
        image = pipe(
            "a red circle",
            width=width,
            height=height,
            num_inference_steps=2,
            guidance_scale=defaults["guidance_scale"],
            max_sequence_length=defaults["max_sequence_length"],
            generator=torch.Generator().manual_seed(0),
        ).images[0]
        assert image.size == (width, height)
        assert np.asarray(image).std() > 0


def test_smoke_build_measures_latent_scaling_and_logs(smoke_zoo):
    out, work = smoke_zoo
    pipe = load_pipeline(out / "shapes-sd3")
    assert pipe.vae.config.scaling_factor != 1.0 and pipe.vae.config.shift_factor != 0.0
    report = json.loads((work / "shapes-sd3-build.json").read_text())
    assert set(report["minutes"]) >= {"render", "clip", "scene_encoder", "vae", "tiny_vae", "teacher", "total"}
    for log in ("clip.csv", "scene_encoder.csv", "vae.csv", "tiny_vae.csv", "shapes-sd3.csv"):
        assert (work / log).read_text().count("\n") >= 2
    assert len((work / "shapes-sd3-snapshots" / "snapshots.jsonl").read_text().splitlines()) == 2


def test_smoke_build_clip_loads_with_its_processor(smoke_zoo):
    out, _ = smoke_zoo
    model = CLIPModel.from_pretrained(out / "shapes-clip")
    processor = CLIPProcessor.from_pretrained(out / "shapes-clip")
    from PIL import Image

    inputs = processor(text=["a red circle"], images=[Image.new("RGB", (96, 64))], return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape[-2:] == (64, 64)  # squashed, not cropped
    with torch.no_grad():
        assert model(**inputs).logits_per_image.shape == (1, 1)


def test_teacher_of_another_depth_reuses_clip_vae_and_scene_encoder(smoke_zoo, tmp_path):
    out, work = smoke_zoo
    assert build_main(["--smoke", "--out", str(out), "--work", str(tmp_path), 'stages=["teacher"]',
                       "teacher.depth=2", 'teacher.name="shapes-sd3-d2"']) == 0
    deeper = load_pipeline(out / "shapes-sd3-d2")
    assert deeper.transformer.config.num_layers == 2
    original = load_pipeline(out / "shapes-sd3")
    assert torch.equal(deeper.vae.encoder.conv_in.weight, original.vae.encoder.conv_in.weight)
    assert torch.equal(deeper.text_encoder_3.shared.weight, original.text_encoder_3.shared.weight)


def test_a_killed_teacher_build_resumes_to_the_same_weights(smoke_zoo, tmp_path, monkeypatch):
    out, _ = smoke_zoo
    def args(work, name, *overrides):
        return ["--smoke", "--out", str(out), "--work", str(work), 'stages=["teacher"]', "teacher.depth=2",
                f'teacher.name="{name}"', *overrides]

    assert build_main(args(tmp_path / "whole", "d2-whole")) == 0

    real_step = build.training_step

    def killed_at_step_3(loss, *rest):  # dies mid-step 3, after the checkpoint written at step 2
        if rest[6] == 2:
            raise KeyboardInterrupt
        return real_step(loss, *rest)

    work = tmp_path / "killed"
    monkeypatch.setattr(build, "training_step", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        build_main(args(work, "d2-killed"))
    assert not (out / "d2-killed").exists() and (work / "d2-killed-checkpoint.pt").is_file()
    steps_run = []
    monkeypatch.setattr(build, "training_step", lambda loss, *rest: steps_run.append(rest[6]) or real_step(loss, *rest))
    assert build_main(args(work, "d2-killed")) == 0
    assert steps_run == [2, 3]  # resumed, not restarted
    whole = load_pipeline(out / "d2-whole").transformer.state_dict()
    for name, weight in load_pipeline(out / "d2-killed").transformer.state_dict().items():
        assert torch.equal(whole[name], weight), name
    assert len(pd.read_csv(work / "d2-killed.csv")) == len(pd.read_csv(tmp_path / "whole" / "d2-whole.csv"))
    # a checkpoint of another configuration is refused, not silently continued
    assert cli_exit_code(build_main, args(work, "d2-killed", "teacher.lr=0.001")) == 2
    assert cli_exit_code(build_main, args(work, "d2-killed", "vae.kl_weight=0.001")) == 2  # any change to the build


def test_teacher_init_from_a_built_teacher(smoke_zoo, tmp_path, capsys):
    out, _ = smoke_zoo
    source = out / "shapes-sd3"
    assert build_main(["--smoke", "--out", str(out), "--work", str(tmp_path), 'stages=["teacher"]',
                       f"teacher.init_from={source}", "teacher.steps=0", 'teacher.name="shapes-sd3-copy"']) == 0
    copied = load_pipeline(out / "shapes-sd3-copy").transformer.state_dict()
    for name, weight in load_pipeline(source).transformer.state_dict().items():
        assert torch.equal(copied[name], weight), name
    # another architecture cannot start from it: one line, nothing written
    assert cli_exit_code(build_main, ["--smoke", "--out", str(out), "--work", str(tmp_path), 'stages=["teacher"]',
                       f"teacher.init_from={source}", "teacher.depth=2", 'teacher.name="shapes-sd3-bad"']) == 2
    assert "differs from the configured teacher in num_layers" in capsys.readouterr().err
    assert not (out / "shapes-sd3-bad").exists()


def test_bad_override_is_one_line_error(capsys):
    assert cli_exit_code(build_main, ["--smoke", "teacher.depthh=3"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_tiny_vae_without_synthetic_shards_is_one_line_error(tmp_path, capsys):
    assert cli_exit_code(build_main, ["--smoke", "--out", str(tmp_path), 'stages=["tiny_vae"]',
                       f"tiny_vae.generated={tmp_path / 'none'}"]) == 2
    assert "no ladd.synth shards there" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_prompt_table_matches_the_pipeline_encoding(smoke_teacher):
    pipe = load_pipeline(smoke_teacher)
    prompts = ["a red circle", "two blue squares above a green cross", "a red circle", ""]
    table = PromptTable(pipe, prompts[:2], batch_size=1)
    embeds, pooled = table(prompts)
    expected_embeds, expected_pooled = encode_prompts(pipe, prompts, max_sequence_length(pipe))
    assert embeds.shape == expected_embeds.shape and embeds.shape[1] == 20 + SCENE_SEQUENCE_LENGTH
    torch.testing.assert_close(embeds, expected_embeds)
    torch.testing.assert_close(pooled, expected_pooled)


def test_smoke_build_fits_a_slim_vae_that_swaps_into_the_pipeline(smoke_zoo):
    out, _ = smoke_zoo
    slim = AutoencoderKL.from_pretrained(out / "shapes-slim-vae")
    pipe = load_pipeline(out / "shapes-sd3")
    assert (slim.config.scaling_factor, slim.config.shift_factor) == \
        (pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor)
    assert slim.config.block_out_channels == [8, 8, 8] != pipe.vae.config.block_out_channels
    images = to_model_range(torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8))
    with torch.no_grad():  # it encodes to the big VAE's latent grid (image-to-image and inpainting encode)
        assert slim.encode(images).latent_dist.mean.shape == pipe.vae.encode(images).latent_dist.mean.shape
    swap_vae(pipe, out / "shapes-slim-vae")
    assert pipe.vae.config.block_out_channels == [8, 8, 8]
    for width, height in BUCKETS:
        image = pipe("a red circle", width=width, height=height, num_inference_steps=2,
                     max_sequence_length=SCENE_SEQUENCE_LENGTH, generator=torch.Generator().manual_seed(0)).images[0]
        assert image.size == (width, height)


def test_swap_vae_refuses_another_latent_space_and_leaves_the_pipeline_alone(smoke_zoo, tmp_path):
    out, _ = smoke_zoo
    pipe = load_pipeline(out / "shapes-sd3")
    slim = AutoencoderKL.from_pretrained(out / "shapes-slim-vae")
    slim.register_to_config(scaling_factor=1.0)
    slim.save_pretrained(tmp_path / "other-space")
    with pytest.raises(ValueError, match="scaling_factor 1.0 vs the model's"):
        swap_vae(pipe, tmp_path / "other-space")
    with pytest.raises(ValueError, match="not a VAE folder"):
        swap_vae(pipe, out / "shapes-clip")
    assert pipe.vae.config.block_out_channels != [8, 8, 8]


@pytest.mark.parametrize("vae_class", ["AutoencoderKL", "AutoencoderTiny"])
def test_tiny_vae_training_lowers_its_reconstruction_and_encoding_errors(smoke_zoo, smoke_latents, tmp_path,
                                                                         vae_class):
    out, _ = smoke_zoo
    vae = AutoencoderKL.from_pretrained(out / "shapes-sd3" / "vae").eval()
    pool = render_pool(64, seed=1, progress=False)
    cfg = {"class": vae_class, "block_out_channels": [8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4,
           "encoder_blocks": [1, 1, 1], "decoder_blocks": [1, 1, 0],
           "batch_size": 16, "steps": 60, "lr": 3e-3, "warmup": 1, "crop_size": 32, "latent_noise": 0.2}
    # half of each decoder batch from the smoke teacher's synthetic latents (all three buckets' shapes)
    small = train_tiny_vae(pool, vae, cfg, MetricsLog(tmp_path / "log.csv"), seed=0,
                           generated=LatentBuckets(smoke_latents))
    assert type(small).__name__ == vae_class
    assert (small.config.scaling_factor, small.config.shift_factor) == \
        (vae.config.scaling_factor, vae.config.shift_factor)
    log = pd.read_csv(tmp_path / "log.csv")
    for loss in ("decode_loss", "encode_loss"):
        assert log[loss].iloc[-1] < 0.7 * log[loss].iloc[0], loss
    small.save_pretrained(tmp_path / "small")
    pipe = load_pipeline(out / "shapes-sd3")
    assert isinstance(swap_vae(pipe, tmp_path / "small").vae, type(small))


def test_tiny_vae_class_must_be_a_known_autoencoder(smoke_zoo):
    out, _ = smoke_zoo
    vae = AutoencoderKL.from_pretrained(out / "shapes-sd3" / "vae")
    with pytest.raises(ValueError, match="tiny_vae.class is 'VQModel': AutoencoderKL or AutoencoderTiny"):
        make_tiny_vae({"class": "VQModel", "block_out_channels": [8, 8, 8]}, vae)
    with pytest.raises(ValueError, match="needs 3 entries"):
        make_tiny_vae({"class": "AutoencoderKL", "block_out_channels": [8, 8], "layers_per_block": 1}, vae)


@pytest.mark.parametrize("override, message", [
    ('tiny_vae.class="VQModel"', "tiny_vae.class is 'VQModel'"),
    ("tiny_vae.layers_per_block=0", "tiny_vae.layers_per_block must be >= 1"),
])
def test_bad_tiny_vae_config_is_one_line_error_before_any_work(tmp_path, capsys, override, message):
    assert cli_exit_code(build_main, ["--smoke", "--out", str(tmp_path), 'stages=["tiny_vae"]', override]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


ZOO_BUDGET_MB = 40  # raised from 24 for the image-to-image students (issue 28); teachers are rebuilt, not committed


def committed_zoo() -> list[str]:
    from ladd.paths import REPO_ROOT

    listing = subprocess.run(["git", "ls-files", "-z", "models"], cwd=REPO_ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    return [p for p in listing.stdout.split("\0") if p]


def test_the_committed_zoo_fits_its_budget_and_every_link_stays_inside_it():
    from ladd.paths import REPO_ROOT

    files = committed_zoo()
    size = sum((REPO_ROOT / p).lstat().st_size for p in files)
    assert size <= ZOO_BUDGET_MB * 1e6, f"the committed zoo is {size / 1e6:.1f} MB"
    committed = {str(Path(p)) for p in files}
    for link in (REPO_ROOT / p for p in files if (REPO_ROOT / p).is_symlink()):
        target = link.resolve()
        assert target.is_dir(), link
        # a link into an uncommitted folder (e.g. an image-to-image teacher) would break in a fresh clone
        assert all(str(f.relative_to(REPO_ROOT)) in committed for f in target.rglob("*") if f.is_file()), link
