"""Classical inpainting baselines that need no weights: OpenCV's Telea (fast marching) and Navier–Stokes methods.

They stand in for LaMa in the shapes world's inpainting table (the paper compares against LaMa and SD1.5-inpainting,
Fig. 13): a model must at least beat filling the hole from its border. A baseline is called like a diffusers
inpainting pipeline, `baseline(prompt=..., image=[...], mask_image=[...]).images`; it reads no prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


@dataclass
class ClassicalOutput:
    images: list[Image.Image]


class ClassicalInpainting:
    """`cv2.inpaint` with one of METHODS; `radius` in pixels at a 64 px short side, scaled with the image."""

    def __init__(self, method: str = "telea", radius: float = 3.0):
        if method not in METHODS:
            raise ValueError(f"unknown classical inpainting method {method!r}; expected one of {sorted(METHODS)}")
        self.method, self.radius = method, radius

    def fill(self, image: Image.Image, mask: Image.Image) -> Image.Image:
        pixels = np.asarray(image.convert("RGB"))
        hole = (np.asarray(mask.convert("L").resize(image.size, Image.NEAREST)) >= 128).astype(np.uint8) * 255
        radius = self.radius * min(image.size) / 64
        return Image.fromarray(cv2.inpaint(pixels, hole, radius, METHODS[self.method]))

    def __call__(self, prompt=None, image=None, mask_image=None, **_) -> ClassicalOutput:
        images = image if isinstance(image, list) else [image]
        masks = mask_image if isinstance(mask_image, list) else [mask_image]
        return ClassicalOutput([self.fill(i, m) for i, m in zip(images, masks)])
