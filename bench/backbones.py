"""Feature networks behind the metrics, and where their weights must be on disk.

Nothing here downloads: every standard backbone is looked up in its usual cache first (the Hugging Face cache
for open_clip, `$TORCH_HOME/hub/checkpoints` for Inception and AlexNet) and a missing file is a one-line
`BackboneMissing` naming the file and where to put it.

A CLIP backbone is anything with `name`, `embed_dim`, `encode_images(list[PIL.Image])` and
`encode_texts(list[str])`, both returning L2-normalised rows, so metrics can take a toy one in tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError
from ladd.paths import MODELS_DIR
from ladd.pipelines import cached_hub_file

# The paper's CLIP score model (footnote 1): open_clip ViT-g-14 trained on LAION-2B.
PAPER_CLIP = ("ViT-g-14", "laion2b_s34b_b88k")
PAPER_CLIP_REPO = "laion/CLIP-ViT-g-14-laion2B-s34B-b88K"
PAPER_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
SHAPES_CLIP_DIR = MODELS_DIR / "shapes-clip"


class BackboneMissing(BenchError):
    """A metric's feature network has no weights on disk."""


class CLIPBackbone(Protocol):
    name: str
    embed_dim: int

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=-1)


class HFCLIPBackbone:
    """A Hugging Face CLIP folder (`CLIPModel` + `CLIPProcessor`), e.g. the shapes world's `models/shapes-clip/`."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        from transformers import CLIPModel, CLIPProcessor

        self.folder = Path(folder)
        self.name = f"hf-clip:{self.folder}"
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(str(folder)).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(str(folder))
        self.embed_dim = self.model.config.projection_dim

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            # vision tower + projection directly: the same across transformers 4.x/5.x return types
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            chunks.append(_normalise(self.model.visual_projection(pooled)).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.processor(text=list(texts[start : start + self.batch_size]), return_tensors="pt",
                                    padding=True, truncation=True).to(self.device)
            pooled = self.model.text_model(input_ids=tokens["input_ids"],
                                           attention_mask=tokens["attention_mask"]).pooler_output
            chunks.append(_normalise(self.model.text_projection(pooled)).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)


class OpenCLIPBackbone:
    """An open_clip model from a local weights file (the paper's ViT-g-14 by default).

    open_clip's tokenizer truncates to 77 tokens, as the paper's CLIP score does for long prompts.
    """

    def __init__(self, weights_file: str | Path, model_name: str = PAPER_CLIP[0], device="cpu", batch_size=32):
        import open_clip

        self.name = f"open_clip:{model_name}:{Path(weights_file).name}"
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=str(weights_file), device=self.device
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.embed_dim = int(self.model.text_projection.shape[-1])

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images[start : start + self.batch_size]])
            chunks.append(_normalise(self.model.encode_image(batch.to(self.device))).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            chunks.append(_normalise(self.model.encode_text(tokens)).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)


# ---------------------------------------------------------------------------------------------------------------
# Locating weights without touching the network


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def paper_clip_weights() -> str:
    for filename in PAPER_CLIP_FILES:
        found = cached_hub_file(PAPER_CLIP_REPO, filename)
        if found:
            return found
    raise BackboneMissing(
        f"CLIP score needs open_clip {PAPER_CLIP[0]} {PAPER_CLIP[1]}: {PAPER_CLIP_FILES[1]} (or "
        f"{PAPER_CLIP_FILES[0]}) of {PAPER_CLIP_REPO} is not in the Hugging Face cache {hf_cache_dir()}; "
        f"fetch it with `hf download {PAPER_CLIP_REPO} {PAPER_CLIP_FILES[1]}` (set HF_HOME to use another cache), "
        f"or pass --clip PATH (a weights file or a Hugging Face CLIP folder), or --no-score"
    )


def torch_checkpoint(url: str) -> Path:
    """Where torch.hub keeps (and looks for) the file behind `url`: $TORCH_HOME/hub/checkpoints/<name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _require_torch_checkpoint(url: str, what: str) -> Path:
    path = torch_checkpoint(url)
    if not path.is_file():
        raise BackboneMissing(
            f"{what} needs {path.name}, not found in {path.parent} (TORCH_HOME="
            f"{os.environ.get('TORCH_HOME', '~/.cache/torch')}); download {url} into that folder"
        )
    return path


def inception_weights() -> Path:
    """torch-fidelity's port of the TF Inception (2015-12-05) that FID is defined with."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return _require_torch_checkpoint(URL_INCEPTION_V3, "FID")


def alexnet_weights() -> Path:
    from torchvision.models import AlexNet_Weights

    return _require_torch_checkpoint(AlexNet_Weights.IMAGENET1K_V1.url, "LPIPS (AlexNet)")


def is_hf_clip_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


class CLIPChoice:
    """Which CLIP a run is scored with, checked for availability before anything is generated or loaded.

    `spec` is None (the paper's ViT-g-14 from the HF cache), a Hugging Face CLIP folder, or an open_clip weights
    file for ViT-g-14.
    """

    def __init__(self, spec: str | Path | None):
        self.spec = None if spec is None else str(spec)

    def check(self) -> str:
        if self.spec is None:
            return paper_clip_weights()
        path = Path(self.spec)
        if is_hf_clip_folder(path) or path.is_file():
            return str(path)
        raise BackboneMissing(f"--clip {self.spec}: expected a Hugging Face CLIP folder (with config.json) or an "
                              f"open_clip {PAPER_CLIP[0]} weights file")

    def load(self, device="cpu") -> CLIPBackbone:
        where = Path(self.check())
        if is_hf_clip_folder(where):
            return HFCLIPBackbone(where, device=device)
        return OpenCLIPBackbone(where, device=device)

    @property
    def label(self) -> str:
        return self.spec or f"open_clip:{PAPER_CLIP[0]}:{PAPER_CLIP[1]}"


def shapes_clip() -> CLIPChoice:
    if not is_hf_clip_folder(SHAPES_CLIP_DIR):
        raise BackboneMissing(f"the shapes suite is scored with the shapes CLIP, but {SHAPES_CLIP_DIR} is missing "
                              f"(it is part of the committed shapes zoo); pass --clip PATH or --no-score")
    return CLIPChoice(SHAPES_CLIP_DIR)


# ---------------------------------------------------------------------------------------------------------------
# Image conversions shared by the metrics


def pil_to_uint8(images: list[Image.Image]) -> torch.Tensor:
    """(N, 3, H, W) uint8 from same-sized PIL images."""
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def uint8_to_pil(batch: torch.Tensor) -> list[Image.Image]:
    arrays = batch.detach().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arrays]


class CLIPImageFeatures(torch.nn.Module):
    """A CLIP image tower as torchmetrics' FID `feature` module: uint8 (N, 3, H, W) in, embeddings out.

    `num_features` is set so torchmetrics does not probe the module with a dummy 299×299 image.
    """

    def __init__(self, backbone: CLIPBackbone):
        super().__init__()
        self.backbone = backbone
        self.num_features = int(backbone.embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_images(uint8_to_pil(images)).double()
