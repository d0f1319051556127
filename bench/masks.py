"""Inpainting masks, deterministic from (image id, seed). True / white = the region to fill in.

The paper evaluates inpainting "with different policies, ranging from narrow to wide masks and outpainting style
masks". We use LaMa's published mask presets (advimman/lama, `configs/data_gen/random_{thin,medium,thick}_512.yaml`)
for irregular strokes and boxes, plus round cutouts, single rectangles and outpainting borders:

| policy      | what                                                                                         |
|-------------|----------------------------------------------------------------------------------------------|
| `thin`      | LaMa thin: 4–70 strokes, width ≤ 5+20 px, segment length ≤ 10+100 px, no boxes                  |
| `medium`    | LaMa medium: 4–10 strokes (width ≤ 5+100, length ≤ 10+200) or, with weight 0.3, 1–5 boxes 30–150 px |
| `thick`     | LaMa thick: 1–5 strokes (width ≤ 5+250, length ≤ 10+450) or, with weight 0.3, 1–4 boxes 30–300 px, margin 10 |
| `round`     | 1–3 disks, radius 8–25 % of the short side                                                    |
| `rectangle` | one axis-aligned rectangle, each side 20–60 % of the image side                               |
| `outpaint`  | each border, with probability 0.5, covers 4–25 % of the image (at least one border)           |

LaMa's sizes are in pixels of a 512×512 crop; they are scaled by `min(width, height) / 512`. `mixed` picks one of
the six policies per (image, seed); the concrete policy is what gets recorded per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from bench.seeding import stable_seed

LAMA_SIZE = 512


@dataclass(frozen=True)
class StrokePreset:
    min_strokes: int
    max_strokes: int
    max_width: int
    max_length: int
    max_angle: int = 4  # radians; LaMa draws integer angles below this


@dataclass(frozen=True)
class BoxPreset:
    min_boxes: int
    max_boxes: int
    min_size: int
    max_size: int
    margin: int


@dataclass(frozen=True)
class LamaPreset:
    strokes: StrokePreset
    boxes: BoxPreset | None = None
    box_weight: float = 0.0  # LaMa's mixed generator: weights (1 for strokes, this for boxes), normalised


LAMA_PRESETS = {
    "thin": LamaPreset(StrokePreset(4, 70, max_width=20, max_length=100)),
    "medium": LamaPreset(StrokePreset(4, 10, max_width=100, max_length=200), BoxPreset(1, 5, 30, 150, 0), 0.3),
    "thick": LamaPreset(StrokePreset(1, 5, max_width=250, max_length=450), BoxPreset(1, 4, 30, 300, 10), 0.3),
}
MASK_POLICIES = ("thin", "medium", "thick", "round", "rectangle", "outpaint")
POLICY_CHOICES = MASK_POLICIES + ("mixed",)


def draw_strokes(canvas: ImageDraw.ImageDraw, rng: np.random.Generator, preset: StrokePreset, width: int,
                 height: int, scale: float) -> None:
    """LaMa-style irregular strokes: random walks of 1–5 thick segments from a random start point."""
    for stroke in range(rng.integers(preset.min_strokes, preset.max_strokes + 1)):
        x, y = float(rng.integers(width)), float(rng.integers(height))
        for _ in range(1 + rng.integers(5)):
            angle = 0.01 + rng.integers(preset.max_angle)
            if stroke % 2 == 0:
                angle = 2 * math.pi - angle  # alternate strokes turn the other way, as in LaMa
            length = (10 + rng.integers(preset.max_length)) * scale
            brush = max(1, round((5 + rng.integers(preset.max_width)) * scale))
            end_x = float(np.clip(x + length * math.sin(angle), 0, width - 1))
            end_y = float(np.clip(y + length * math.cos(angle), 0, height - 1))
            canvas.line([(x, y), (end_x, end_y)], fill=255, width=brush)
            # Round caps so consecutive segments join without notches.
            for cx, cy in ((x, y), (end_x, end_y)):
                canvas.ellipse([cx - brush / 2, cy - brush / 2, cx + brush / 2, cy + brush / 2], fill=255)
            x, y = end_x, end_y


def draw_boxes(canvas: ImageDraw.ImageDraw, rng: np.random.Generator, preset: BoxPreset, width: int, height: int,
               scale: float) -> None:
    margin = round(preset.margin * scale)
    max_size = min(round(preset.max_size * scale), height - 2 * margin, width - 2 * margin)
    min_size = max(1, min(round(preset.min_size * scale), max_size - 1))
    for _ in range(rng.integers(preset.min_boxes, preset.max_boxes + 1)):
        box_w, box_h = rng.integers(min_size, max_size, size=2)
        left = rng.integers(margin, width - margin - box_w + 1)
        top = rng.integers(margin, height - margin - box_h + 1)
        canvas.rectangle([left, top, left + box_w - 1, top + box_h - 1], fill=255)


def draw_lama(canvas, rng, preset: LamaPreset, width: int, height: int) -> None:
    scale = min(width, height) / LAMA_SIZE
    use_boxes = preset.boxes is not None and rng.random() < preset.box_weight / (1.0 + preset.box_weight)
    if use_boxes:
        draw_boxes(canvas, rng, preset.boxes, width, height, scale)
    else:
        draw_strokes(canvas, rng, preset.strokes, width, height, scale)


def draw_round(canvas, rng, width: int, height: int) -> None:
    short = min(width, height)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(0.08, 0.25) * short
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        canvas.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)


def draw_rectangle(canvas, rng, width: int, height: int) -> None:
    box_w = max(1, round(rng.uniform(0.2, 0.6) * width))
    box_h = max(1, round(rng.uniform(0.2, 0.6) * height))
    left = rng.integers(0, width - box_w + 1)
    top = rng.integers(0, height - box_h + 1)
    canvas.rectangle([left, top, left + box_w - 1, top + box_h - 1], fill=255)


def draw_outpaint(canvas, rng, width: int, height: int) -> None:
    sides = rng.random(4) < 0.5
    if not sides.any():
        sides[rng.integers(4)] = True  # an outpainting mask must mask something
    fractions = rng.uniform(0.04, 0.25, size=4)
    left, right, top, bottom = (max(1, round(f * n)) for f, n in zip(fractions, (width, width, height, height)))
    if sides[0]:
        canvas.rectangle([0, 0, left - 1, height - 1], fill=255)
    if sides[1]:
        canvas.rectangle([width - right, 0, width - 1, height - 1], fill=255)
    if sides[2]:
        canvas.rectangle([0, 0, width - 1, top - 1], fill=255)
    if sides[3]:
        canvas.rectangle([0, height - bottom, width - 1, height - 1], fill=255)


def _choose_policy(rng: np.random.Generator, policy: str) -> str:
    return MASK_POLICIES[rng.integers(len(MASK_POLICIES))] if policy == "mixed" else policy


def mask_policy_for(image_id: str, seed: int, policy: str = "mixed") -> str:
    """The concrete policy `make_mask` will use, without drawing the mask (cheap enough for planning)."""
    if policy not in POLICY_CHOICES:
        raise ValueError(f"unknown mask policy {policy!r}; choose from {', '.join(POLICY_CHOICES)}")
    return _choose_policy(np.random.default_rng(stable_seed("mask", image_id, seed, policy)), policy)


def make_mask(image_id: str, seed: int, width: int, height: int, policy: str = "mixed") -> tuple[np.ndarray, str]:
    """A boolean (height, width) mask and the policy that drew it; identical for identical arguments."""
    if policy not in POLICY_CHOICES:
        raise ValueError(f"unknown mask policy {policy!r}; choose from {', '.join(POLICY_CHOICES)}")
    rng = np.random.default_rng(stable_seed("mask", image_id, seed, policy))
    policy = _choose_policy(rng, policy)
    image = Image.new("L", (width, height), 0)
    canvas = ImageDraw.Draw(image)
    if policy in LAMA_PRESETS:
        draw_lama(canvas, rng, LAMA_PRESETS[policy], width, height)
    elif policy == "round":
        draw_round(canvas, rng, width, height)
    elif policy == "rectangle":
        draw_rectangle(canvas, rng, width, height)
    else:
        draw_outpaint(canvas, rng, width, height)
    return np.asarray(image) > 127, policy


def mask_image(mask: np.ndarray) -> Image.Image:
    """The mask as diffusers' inpainting pipelines take it: white where to inpaint."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


def masked_input(image: Image.Image, mask: np.ndarray, fill: int = 127) -> Image.Image:
    """The image with the masked region greyed out (what an inpainting model is shown)."""
    pixels = np.asarray(image.convert("RGB")).copy()
    pixels[mask] = fill
    return Image.fromarray(pixels)
