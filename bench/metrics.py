"""The paper's metrics as torchmetrics `Metric`s (`update` then `compute`), each with an injectable backbone.

| metric | definition |
|---|---|
| `CLIPScore` | mean over images of cos(E_I(image), E_T(prompt)), raw cosine (×1, not torchmetrics' ×100): the LADD paper's CLIP score with open_clip ViT-g-14 (SD3 ≈ 0.35 on COCO prompts) |
| `CLIPImageSimilarity` | mean cos(E_I(source), E_I(edited)) (InstructPix2Pix) |
| `CLIPDirectionSimilarity` | mean cos(E_I(edited) − E_I(source), E_T(target caption) − E_T(source caption)) (InstructPix2Pix) |
| `fid()` | torchmetrics' FrechetInceptionDistance on the TF Inception (2015-12-05) weights of torch-fidelity |
| `FrechetCLIPDistance` | the same Fréchet distance on L2-normalised CLIP image embeddings |
| `LPIPS` | mean LPIPS (AlexNet, v0.1) between each output and its reference, inputs scaled to [-1, 1] |
| `ShapesAccuracy` | fraction of images the shapes world's exact evaluator marks correct |

Per-sample values are kept (`sample_scores()`), so the scorer can group them by category without recomputing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from bench.backbones import CLIPBackbone, CLIPImageFeatures, alexnet_weights, inception_weights, pil_to_uint8


class _MeanOfSamples(Metric):
    """A metric that is the mean of one value per sample; the values are kept for per-category tables."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def _append(self, values: torch.Tensor) -> None:
        self.values.append(values.detach().double().cpu().reshape(-1))

    def sample_scores(self) -> torch.Tensor:
        return dim_zero_cat(self.values) if self.values else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> torch.Tensor:
        scores = self.sample_scores()
        if scores.numel() == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update")
        return scores.mean()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def _check_lengths(*sequences: Sequence) -> None:
    if len({len(s) for s in sequences}) != 1:
        raise ValueError(f"inputs have different lengths: {[len(s) for s in sequences]}")


class CLIPScore(_MeanOfSamples):
    """The paper's CLIP score: mean raw cosine between image and prompt embeddings."""

    def __init__(self, backbone: CLIPBackbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def update(self, images: list[Image.Image], texts: list[str]) -> None:
        _check_lengths(images, texts)
        self._append(_cosine(self.backbone.encode_images(list(images)), self.backbone.encode_texts(list(texts))))


class CLIPImageSimilarity(_MeanOfSamples):
    """InstructPix2Pix's fidelity to the input: cos(E_I(source), E_I(edited))."""

    def __init__(self, backbone: CLIPBackbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def update(self, sources: list[Image.Image], edited: list[Image.Image]) -> None:
        _check_lengths(sources, edited)
        self._append(_cosine(self.backbone.encode_images(list(sources)), self.backbone.encode_images(list(edited))))


class CLIPDirectionSimilarity(_MeanOfSamples):
    """InstructPix2Pix's fidelity to the edit: does the image move in CLIP space the way the caption moves?"""

    def __init__(self, backbone: CLIPBackbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def update(self, sources: list[Image.Image], edited: list[Image.Image], source_texts: list[str],
               target_texts: list[str]) -> None:
        _check_lengths(sources, edited, source_texts, target_texts)
        image_direction = self.backbone.encode_images(list(edited)) - self.backbone.encode_images(list(sources))
        text_direction = self.backbone.encode_texts(list(target_texts)) - self.backbone.encode_texts(list(source_texts))
        self._append(_cosine(image_direction, text_direction))


def fid(feature: torch.nn.Module | None = None, **kwargs) -> FrechetInceptionDistance:
    """FID as torchmetrics computes it, on torch-fidelity's Inception weights read from disk (never downloaded).

    `antialias=False` keeps torch-fidelity's TF1-style bilinear resize to 299 px, the resize the published FID
    numbers were computed with. Pass `feature` (any module mapping uint8 images to features) to swap the backbone.
    """
    if feature is not None:
        return FrechetInceptionDistance(feature=feature, **kwargs)
    return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception_weights()),
                                    antialias=False, **kwargs)


class FrechetCLIPDistance(FrechetInceptionDistance):
    """Fréchet distance between two image sets in (L2-normalised) CLIP image-embedding space.

    `update(images, real)` takes uint8 (N, 3, H, W) like FID; `update_pil` takes same-sized PIL images.
    """

    def __init__(self, backbone: CLIPBackbone, **kwargs):
        super().__init__(feature=CLIPImageFeatures(backbone), **kwargs)

    def update_pil(self, images: list[Image.Image], real: bool) -> None:
        self.update(pil_to_uint8(images), real=real)


def _to_unit_range(images) -> torch.Tensor:
    """PIL images or uint8/float tensors → float (N, 3, H, W) in [-1, 1], the range LPIPS expects."""
    if isinstance(images, torch.Tensor):
        batch = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    else:
        batch = pil_to_uint8(list(images)).float() / 255.0
    return batch * 2.0 - 1.0


def default_lpips_net() -> torch.nn.Module:
    """LPIPS v0.1 with AlexNet features (the `lpips` package's reference model); AlexNet weights read from disk."""
    alexnet_weights()  # a clear error instead of torchvision's download attempt
    import lpips

    return lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()


class LPIPS(_MeanOfSamples):
    """Mean LPIPS between outputs and references (lower is better).

    `net(x, y)` takes two float batches in [-1, 1] and returns one distance per pair (any shape reducible to N).
    """

    higher_is_better = False

    def __init__(self, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.net = net if net is not None else default_lpips_net()

    @torch.no_grad()
    def update(self, preds, targets) -> None:
        _check_lengths(preds, targets)
        x, y = _to_unit_range(preds), _to_unit_range(targets)
        if x.shape != y.shape:
            raise ValueError(f"LPIPS compares same-sized images, got {tuple(x.shape)} and {tuple(y.shape)}")
        self._append(self.net(x, y).reshape(x.shape[0], -1).mean(dim=1))


def _shapes_evaluator():
    from ladd.shapes.evaluate import evaluate

    return evaluate


class ShapesAccuracy(_MeanOfSamples):
    """Exact accuracy in the shapes world: the evaluator parses the prompt and checks every object it names.

    `evaluator(image, prompt)` returns an object with `correct` (bool) and `score` (fraction of checks passed);
    the default is `ladd.shapes.evaluate.evaluate`. `check_scores()` gives the per-image partial scores.
    """

    def __init__(self, evaluator: Callable | None = None, **kwargs):
        super().__init__(**kwargs)
        self.evaluator = evaluator if evaluator is not None else _shapes_evaluator()
        self.add_state("partial", default=[], dist_reduce_fx="cat")

    def update(self, images: list[Image.Image], prompts: list[str]) -> None:
        _check_lengths(images, prompts)
        results = [self.evaluator(image, prompt) for image, prompt in zip(images, prompts)]
        self._append(torch.tensor([float(r.correct) for r in results]))
        self.partial.append(torch.tensor([float(r.score) for r in results], dtype=torch.float64))

    def check_scores(self) -> torch.Tensor:
        return dim_zero_cat(self.partial) if self.partial else torch.zeros(0, dtype=torch.float64)


class CLIPImageDistance(_MeanOfSamples):
    """1 - cos(E_I(a), E_I(b)) per image pair: a perceptual distance in a CLIP's image space. The shapes world's
    stand-in for LPIPS, whose AlexNet weights are not on disk here (docs/bench.md); lower is closer."""

    higher_is_better = False

    def __init__(self, backbone: CLIPBackbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def update(self, images: list[Image.Image], references: list[Image.Image]) -> None:
        _check_lengths(images, references)
        self._append(1 - _cosine(self.backbone.encode_images(images), self.backbone.encode_images(references)))


class ShapesEditAccuracy(_MeanOfSamples):
    """Exact edit scores in the shapes edit world (`ladd.shapes.edits.evaluate_edit`): per image, whether the edit
    is right (the target caption's checks) and whether everything else was kept (untouched objects in place, PSNR
    outside the edit region); the metric's value is the share of images with both."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("edit", default=[], dist_reduce_fx="cat")
        self.add_state("kept", default=[], dist_reduce_fx="cat")
        self.add_state("psnr", default=[], dist_reduce_fx="cat")

    def update(self, sources: list[Image.Image], edited: list[Image.Image], edits: list) -> None:
        from ladd.shapes.edits import evaluate_edit

        _check_lengths(sources, edited, edits)
        results = [evaluate_edit(image, source, edit) for source, image, edit in zip(sources, edited, edits)]
        self._append(torch.tensor([float(r.correct) for r in results]))
        self.edit.append(torch.tensor([float(r.edit_correct) for r in results], dtype=torch.float64))
        self.kept.append(torch.tensor([float(r.preserved) for r in results], dtype=torch.float64))
        self.psnr.append(torch.tensor([min(r.psnr, 100.0) for r in results], dtype=torch.float64))  # inf: identical

    def edit_scores(self) -> torch.Tensor:
        return dim_zero_cat(self.edit) if self.edit else torch.zeros(0, dtype=torch.float64)

    def preservation_scores(self) -> torch.Tensor:
        return dim_zero_cat(self.kept) if self.kept else torch.zeros(0, dtype=torch.float64)

    def psnr_values(self) -> torch.Tensor:
        return dim_zero_cat(self.psnr) if self.psnr else torch.zeros(0, dtype=torch.float64)

