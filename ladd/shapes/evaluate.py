"""Exact evaluator (GenEval in miniature): image + prompt -> per-check pass/fail, by classical image analysis.

1. Every pixel takes the nearest palette colour (object colours and backgrounds), if it is near enough.
2. Connected regions of one object colour are objects (specks below a minimum area are ignored).
3. An object's shape is the template (circle, square, triangle, cross) its box-normalised mask overlaps most.
4. An object's size class is its bounding-box side against the midpoint of the two sizes.
5. The prompt's scene spec asks the questions: each group present, counted exactly, of the named size;
   the relation between the groups' mean box centres; the background colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from ladd.shapes.grammar import BACKGROUNDS, COLOURS, SHAPES, Scene, parse_prompt
from ladd.shapes.render import BASE_SIDE, SIDE

PALETTE_NAMES = list(COLOURS) + list(BACKGROUNDS)
PALETTE = np.array([COLOURS.get(n) or BACKGROUNDS[n] for n in PALETTE_NAMES], dtype=np.float32)
MAX_COLOUR_DISTANCE = 90.0  # RGB distance beyond which a pixel belongs to no palette colour (edges, smudges)
MIN_AREA = 40  # pixels at a 64 px short side; smaller regions are noise, not objects
TEMPLATE_RESOLUTION = 24
MIN_TEMPLATE_IOU = 0.45  # a region matching no template this well has no shape
SIZE_THRESHOLD = (SIDE["small"] + SIDE["large"]) / 2


@dataclass(frozen=True)
class DetectedObject:
    colour: str
    shape: str | None
    cx: float  # bounding-box centre
    cy: float
    side: float  # longest bounding-box side, in pixels
    area: int


@dataclass
class Evaluation:
    prompt: str
    checks: dict[str, bool]
    objects: list[DetectedObject] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(self.checks.values()) / len(self.checks)

    @property
    def correct(self) -> bool:
        return all(self.checks.values())


@lru_cache(maxsize=None)
def _templates() -> dict[str, np.ndarray]:
    from ladd.shapes.render import shape_mask

    return {shape: shape_mask(shape, TEMPLATE_RESOLUTION) for shape in SHAPES}


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """Index into PALETTE_NAMES of each pixel's nearest palette colour, or -1 when none is near enough."""
    distances = np.linalg.norm(rgb[:, :, None, :].astype(np.float32) - PALETTE[None, None], axis=-1)
    labels = distances.argmin(-1)
    labels[distances.min(-1) > MAX_COLOUR_DISTANCE] = -1
    return labels


def classify_shape(mask: np.ndarray) -> str | None:
    """Shape whose template best overlaps the region's mask scaled to its bounding box (IoU), if any fits."""
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (TEMPLATE_RESOLUTION, TEMPLATE_RESOLUTION), Image.BILINEAR
    )
    normalised = np.asarray(resized) >= 128
    best, best_iou = None, MIN_TEMPLATE_IOU
    for shape, template in _templates().items():
        iou = (normalised & template).sum() / max((normalised | template).sum(), 1)
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def detect_objects(image: Image.Image) -> tuple[list[DetectedObject], str]:
    """Objects in an image, and the name of its background colour (the commonest palette colour on the border)."""
    rgb = np.asarray(image.convert("RGB"))
    labels = classify_pixels(rgb)
    scale = min(rgb.shape[:2]) / BASE_SIDE
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    border = border[border >= 0]
    background = PALETTE_NAMES[np.bincount(border).argmax()] if border.size else ""
    objects = []
    for index, colour in enumerate(COLOURS):
        if colour == background:
            continue
        regions, count = ndimage.label(labels == index)
        for region_slice, region_id in zip(ndimage.find_objects(regions), range(1, count + 1)):
            mask = ndimage.binary_fill_holes(regions[region_slice] == region_id)
            area = int(mask.sum())
            if area < MIN_AREA * scale**2:
                continue
            rows, cols = region_slice
            objects.append(
                DetectedObject(
                    colour=colour,
                    shape=classify_shape(mask),
                    cx=(cols.start + cols.stop) / 2,  # box centre, not centroid: a triangle's centroid sits low
                    cy=(rows.start + rows.stop) / 2,
                    side=float(max(mask.shape)),
                    area=area,
                )
            )
    return objects, background


def _relation_holds(relation: str, first: list[DetectedObject], second: list[DetectedObject]) -> bool:
    dx = np.mean([o.cx for o in first]) - np.mean([o.cx for o in second])
    dy = np.mean([o.cy for o in first]) - np.mean([o.cy for o in second])
    if relation == "left of":
        return dx < 0 and abs(dx) > abs(dy)
    if relation == "right of":
        return dx > 0 and abs(dx) > abs(dy)
    if relation == "above":
        return dy < 0 and abs(dy) > abs(dx)
    return dy > 0 and abs(dy) > abs(dx)  # below


def group_objects(objects: list[DetectedObject], group) -> list[DetectedObject]:
    """The detected objects of a prompt group's colour and shape."""
    return [o for o in objects if o.colour == group.colour and o.shape == group.shape]


def evaluate_scene(image: Image.Image, scene: Scene, prompt: str = "") -> Evaluation:
    objects, background = detect_objects(image)
    scale = min(image.size) / BASE_SIDE
    checks: dict[str, bool] = {}
    matched = []
    for i, group in enumerate(scene.groups):
        found = group_objects(objects, group)
        matched.append(found)
        checks[f"object_{i}"] = bool(found)
        checks[f"count_{i}"] = len(found) == group.count
        if group.size:
            want_large = group.size == "large"
            checks[f"size_{i}"] = bool(found) and all((o.side > SIZE_THRESHOLD * scale) == want_large for o in found)
    if scene.relation:
        checks["relation"] = all(matched) and _relation_holds(scene.relation, matched[0], matched[1])
    if scene.background:
        checks["background"] = background == scene.background
    return Evaluation(prompt=prompt, checks=checks, objects=objects)


def evaluate(image: Image.Image, prompt: str) -> Evaluation:
    """Check an image against a shapes-world prompt."""
    return evaluate_scene(image, parse_prompt(prompt), prompt)
