"""Each metric against a value computed by hand on a toy backbone, plus the real backbones' wiring."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from bench.backbones import BackboneMissing, CLIPChoice, HFCLIPBackbone, pil_to_uint8
from bench.metrics import (LPIPS, CLIPDirectionSimilarity, CLIPImageSimilarity, CLIPScore, FrechetCLIPDistance,
                           ShapesAccuracy, fid)
from tests.bench.conftest import solid

RED, GREEN, YELLOW = (255, 0, 0), (0, 255, 0), (255, 255, 0)
INV_SQRT2 = 1 / math.sqrt(2)


def test_clip_score_is_the_mean_raw_cosine(toy_clip):
    metric = CLIPScore(toy_clip)
    metric.update([solid(RED), solid(YELLOW)], ["red", "red"])
    metric.update([solid(GREEN)], ["red"])
    # cos(red, red) = 1, cos(yellow, red) = 1/√2, cos(green, red) = 0; ×1, not ×100
    np.testing.assert_allclose(metric.sample_scores().numpy(), [1.0, INV_SQRT2, 0.0], atol=1e-9)
    assert float(metric.compute()) == pytest.approx((1 + INV_SQRT2) / 3)


def test_clip_image_similarity(toy_clip):
    metric = CLIPImageSimilarity(toy_clip)
    metric.update([solid(RED), solid(RED)], [solid(RED), solid(YELLOW)])
    assert float(metric.compute()) == pytest.approx((1 + INV_SQRT2) / 2)


def test_clip_direction_similarity(toy_clip):
    metric = CLIPDirectionSimilarity(toy_clip)
    # red→yellow image, "red"→"yellow" caption: the same direction, cosine 1.
    # red→green image (direction (-1, 1, 0)), "red"→"blue" caption ((-1, 0, 1)): cosine 1/2.
    metric.update([solid(RED), solid(RED)], [solid(YELLOW), solid(GREEN)], ["red", "red"], ["yellow", "blue"])
    np.testing.assert_allclose(metric.sample_scores().numpy(), [1.0, 0.5], atol=1e-9)
    assert float(metric.compute()) == pytest.approx(0.75)


def test_metrics_reject_mismatched_inputs(toy_clip):
    with pytest.raises(ValueError, match="different lengths"):
        CLIPScore(toy_clip).update([solid(RED)], ["red", "red"])
    with pytest.raises(RuntimeError, match="before any update"):
        CLIPScore(toy_clip).compute()


class RedValue(torch.nn.Module):
    """A one-feature 'network': the red value of the top-left pixel."""

    num_features = 1

    def forward(self, images):
        return images[:, 0, 0, 0].double().unsqueeze(1)


def grey_levels(values):
    return pil_to_uint8([solid((v, 0, 0)) for v in values])


def test_fid_with_an_injected_feature_matches_the_1d_formula():
    metric = fid(feature=RedValue())
    metric.update(grey_levels([0, 2]), real=True)  # mean 1, sample variance 2
    metric.update(grey_levels([1, 3, 5]), real=False)  # mean 3, sample variance 4
    expected = (3 - 1) ** 2 + 2 + 4 - 2 * math.sqrt(2 * 4)  # (μ1-μ2)² + σ1² + σ2² - 2σ1σ2
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)


def frechet_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_frechet_clip_distance(toy_clip):
    real = [solid(c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 0), (0, 90, 200)]]
    fake = [solid(c) for c in [(255, 30, 0), (10, 200, 40), (60, 0, 255), (90, 200, 90), (200, 90, 0)]]
    metric = FrechetCLIPDistance(toy_clip)
    metric.update_pil(real, real=True)
    metric.update_pil(fake, real=False)
    expected = frechet_by_hand(toy_clip.encode_images(real).numpy(), toy_clip.encode_images(fake).numpy())
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    same = FrechetCLIPDistance(toy_clip)
    same.update_pil(real, real=True)
    same.update_pil(real, real=False)
    assert abs(float(same.compute())) < 1e-5


def test_lpips_with_a_toy_net_scales_inputs_to_minus_one_one():
    mean_abs = lambda x, y: (x - y).abs().mean(dim=(1, 2, 3))  # noqa: E731
    metric = LPIPS(net=mean_abs)
    # red (1,-1,-1) vs yellow (1,1,-1) in [-1, 1]: |diff| = (0, 2, 0) → mean 2/3; red vs red → 0
    metric.update([solid(RED), solid(RED)], [solid(YELLOW), solid(RED)])
    np.testing.assert_allclose(metric.sample_scores().numpy(), [2 / 3, 0.0], atol=1e-6)
    assert float(metric.compute()) == pytest.approx(1 / 3)
    assert metric.higher_is_better is False


def test_lpips_reference_network_wiring():
    import lpips

    net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()  # random trunk: no download
    metric = LPIPS(net=net)
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    b = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    metric.update([a, a], [a, b])
    scores = metric.sample_scores().numpy()
    assert scores[0] == pytest.approx(0.0, abs=1e-6) and scores[1] > 0


class ToyEvaluation:
    def __init__(self, correct, score):
        self.correct, self.score = correct, score


def toy_evaluator(image, prompt):
    """Correct when the image is red and the prompt says red; half credit for a red image alone."""
    is_red = image.getpixel((0, 0))[0] > 128
    says_red = "red" in prompt
    return ToyEvaluation(is_red and says_red, (is_red + says_red) / 2)


def test_shapes_accuracy_with_a_toy_evaluator():
    metric = ShapesAccuracy(toy_evaluator)
    metric.update([solid(RED), solid(GREEN), solid(RED)], ["a red circle", "a red circle", "a blue square"])
    assert float(metric.compute()) == pytest.approx(1 / 3)
    np.testing.assert_allclose(metric.check_scores().numpy(), [1.0, 0.5, 0.5])


def test_shapes_accuracy_with_the_real_evaluator_on_ground_truth():
    from ladd.shapes.render import render_prompt
    from ladd.shapes.heldout import load_heldout

    rows = load_heldout().groupby("category").head(3)
    prompts = list(rows["prompt"])
    truth = [render_prompt(p, seed, int(w), int(h)) for seed, (p, w, h) in
             enumerate(zip(prompts, rows["width"], rows["height"]))]
    metric = ShapesAccuracy()
    metric.update(truth, prompts)
    assert float(metric.compute()) == 1.0
    blank = ShapesAccuracy()
    blank.update([Image.new("RGB", im.size, (245, 245, 245)) for im in truth], prompts)
    assert float(blank.compute()) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Real backbones: the Hugging Face CLIP folder, and clear errors for weights that are not on disk


def test_hf_clip_backbone_matches_clipmodel(tiny_clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    backbone = HFCLIPBackbone(tiny_clip_dir)
    images = [solid(RED, (96, 64)), solid(GREEN, (64, 64))]
    texts = ["a red circle", "two green squares above a blue cross on a black background and more words " * 3]
    image_emb, text_emb = backbone.encode_images(images), backbone.encode_texts(texts)
    assert image_emb.shape == text_emb.shape == (2, backbone.embed_dim)
    np.testing.assert_allclose(image_emb.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    # Independent path: CLIPModel's own forward (normalised embeddings), the long text truncated
    model, processor = CLIPModel.from_pretrained(tiny_clip_dir).eval(), CLIPProcessor.from_pretrained(tiny_clip_dir)
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        out = model(**inputs)
    np.testing.assert_allclose(image_emb.numpy(), out.image_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(text_emb.numpy(), out.text_embeds.numpy(), atol=1e-5)
    assert CLIPChoice(tiny_clip_dir).load().name.startswith("hf-clip:")


def test_missing_paper_clip_names_repo_file_and_fixes(offline):
    with pytest.raises(BackboneMissing) as error:
        CLIPChoice(None).check()
    message = str(error.value)
    for part in ("ViT-g-14", "laion2b_s34b_b88k", "laion/CLIP-ViT-g-14-laion2B-s34B-b88K",
                 "open_clip_pytorch_model.bin", str(offline / "hf-cache"), "--clip"):
        assert part in message
    assert "\n" not in message


def test_missing_inception_and_alexnet_weights_name_file_and_torch_home(offline):
    with pytest.raises(BackboneMissing) as error:
        fid()
    assert "weights-inception-2015-12-05-6726825d.pth" in str(error.value)
    assert str(offline / "torch-home") in str(error.value)
    with pytest.raises(BackboneMissing) as error:
        LPIPS()
    assert "alexnet-owt-7be5be79.pth" in str(error.value) and "TORCH_HOME" in str(error.value)


def test_cached_paper_clip_file_is_found_without_network(offline):
    """A file placed in the HF cache layout is what CLIPChoice(None) resolves to (no download attempted)."""
    snapshot = offline / "hf-cache" / "models--laion--CLIP-ViT-g-14-laion2B-s34B-b88K"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc123")
    weights = snapshot / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not really weights")
    assert CLIPChoice(None).check() == str(weights)


def test_open_clip_backbone_on_a_tiny_registered_config(tmp_path):
    """The open_clip path of the paper's CLIP score (ViT-g-14 itself is 1.4 B parameters), on a tiny config."""
    import json

    import open_clip

    from bench.backbones import OpenCLIPBackbone

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                              "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "bench-test-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "bench-test-tiny-clip.json")
    model, _, preprocess = open_clip.create_model_and_transforms("bench-test-tiny-clip")
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")

    backbone = OpenCLIPBackbone(tmp_path / "open_clip_pytorch_model.bin", model_name="bench-test-tiny-clip")
    image = solid(RED, (64, 48))
    long_prompt = "a very long prompt " * 40  # > 77 tokens: truncated, as the paper's CLIP score does
    with torch.no_grad():
        expected_image = torch.nn.functional.normalize(model.eval().encode_image(preprocess(image)[None]), dim=-1)
    np.testing.assert_allclose(backbone.encode_images([image]).numpy(), expected_image.numpy(), atol=1e-5)
    assert backbone.encode_texts([long_prompt, "red"]).shape == (2, 16)
    assert CLIPChoice(tmp_path / "open_clip_pytorch_model.bin").check().endswith("open_clip_pytorch_model.bin")


def test_fid_reads_inception_weights_from_torch_home(offline, monkeypatch):
    """torchmetrics builds its Inception from the file in $TORCH_HOME/hub/checkpoints, without a download.

    The file here holds randomly initialised weights in torch-fidelity's layout (the real ones cannot be fetched in
    tests), so only the plumbing is checked, not FID values."""
    import socket
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, state, strict=True: None):
        random_net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    checkpoints = offline / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(random_net.state_dict(), checkpoints / "weights-inception-2015-12-05-6726825d.pth")

    monkeypatch.setattr(socket.socket, "connect", mock.Mock(side_effect=AssertionError("network access")))
    metric = fid()
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    metric.update(images, real=True)
    metric.update(images.flip(0), real=False)
    assert math.isfinite(float(metric.compute()))
