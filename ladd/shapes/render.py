"""Renderer: scene spec + seed -> anti-aliased RGB image, deterministic.

Objects are drawn at 4x resolution and box-filtered down (anti-aliasing). Layouts live on a grid of 16-pixel
cells, the footprint of one transformer token (4x VAE, patch 4): a small object fills one cell, a large one 2x2
cells, so objects sit on token boundaries. Layouts are drawn by rejection sampling from the seed: footprints may
touch (each shape keeps a 2 px margin inside its footprint), and a relation holds for every pair of objects across
the groups, with the relation's axis dominant, so the exact evaluator can read it back without ambiguity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ladd.shapes.grammar import BACKGROUNDS, COLOURS, DEFAULT_BACKGROUND, SIZES, Scene, parse_prompt

# Aspect buckets (width, height); the world's sizes are relative to the short side (64 px).
BUCKETS = ((64, 64), (96, 64), (64, 96))
BASE_SIDE = 64
CELL = 16  # layout grid, pixels at a 64 px short side
CELLS = {"small": 1, "large": 2}  # object footprint in cells
MARGIN = 2  # pixels between a shape and the edge of its footprint
SIDE = {size: cells * CELL - 2 * MARGIN for size, cells in CELLS.items()}  # drawn side: 12 and 28 px
RELATION_MARGIN = 4  # minimum offset along the relation's axis between any two objects of the two groups
DOMINANCE = 1.3  # the relation's axis must dominate the other by this factor
SUPERSAMPLE = 4
MAX_LAYOUT_TRIES = 2000


@dataclass(frozen=True)
class Placed:
    group: int
    shape: str
    colour: str
    cx: float
    cy: float
    side: float


def shape_polygons(shape: str, cx: float, cy: float, side: float) -> list[list[tuple[float, float]]] | None:
    """Polygons of a shape in a side x side box centred at (cx, cy); None for the circle (an ellipse)."""
    h = side / 2
    if shape == "circle":
        return None
    if shape == "square":
        return [[(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]]
    if shape == "triangle":
        return [[(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]]
    if shape == "cross":
        a = side / 6  # arms one third of the box wide
        return [
            [(cx - a, cy - h), (cx + a, cy - h), (cx + a, cy + h), (cx - a, cy + h)],
            [(cx - h, cy - a), (cx + h, cy - a), (cx + h, cy + a), (cx - h, cy + a)],
        ]
    raise ValueError(f"unknown shape {shape!r}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, side: float, fill) -> None:
    polygons = shape_polygons(shape, cx, cy, side)
    if polygons is None:
        h = side / 2
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    else:
        for polygon in polygons:
            draw.polygon(polygon, fill=fill)


def shape_mask(shape: str, resolution: int) -> np.ndarray:
    """The shape filling its whole box, as a boolean resolution x resolution mask (the evaluator's template)."""
    n = resolution * SUPERSAMPLE
    canvas = Image.new("L", (n, n), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, n / 2, n / 2, n, 255)
    return np.asarray(canvas.resize((resolution, resolution), Image.BOX)) >= 128


def _separated(a: Placed, b: Placed, gap: float) -> bool:
    reach = (a.side + b.side) / 2 + gap
    return abs(a.cx - b.cx) >= reach or abs(a.cy - b.cy) >= reach


def _relation_holds(relation: str, first: list[Placed], second: list[Placed]) -> bool:
    horizontal = relation in ("left of", "right of")
    sign = -1 if relation in ("left of", "above") else 1  # first minus second along the axis
    for a in first:
        for b in second:
            along = (a.cx - b.cx) if horizontal else (a.cy - b.cy)
            if sign * along < RELATION_MARGIN:
                return False
    dx = np.mean([a.cx for a in first]) - np.mean([b.cx for b in second])
    dy = np.mean([a.cy for a in first]) - np.mean([b.cy for b in second])
    along, across = (abs(dx), abs(dy)) if horizontal else (abs(dy), abs(dx))
    return along > DOMINANCE * across + RELATION_MARGIN  # clearly along the axis, never a diagonal


def layout(scene: Scene, rng: np.random.Generator, width: int, height: int) -> list[Placed]:
    """Object placements on the cell grid; sizes left open by the prompt are drawn per group."""
    cell = CELL * min(width, height) / BASE_SIDE
    columns, rows = round(width / cell), round(height / cell)
    footprints = [CELLS[group.size or str(rng.choice(SIZES))] for group in scene.groups]
    objects = [(gi, group) for gi, group in enumerate(scene.groups) for _ in range(group.count)]
    gap = 2 * MARGIN * cell / CELL  # footprints may touch; the margins keep shapes apart
    for _ in range(MAX_LAYOUT_TRIES):
        placed: list[Placed] = []
        for gi, group in objects:  # place objects one by one, each retried a few times before restarting
            cells = footprints[gi]
            for _ in range(50):
                left, top = rng.integers(0, columns - cells + 1), rng.integers(0, rows - cells + 1)
                candidate = Placed(gi, group.shape, group.colour, (left + cells / 2) * cell, (top + cells / 2) * cell,
                                   cells * cell - 2 * MARGIN * cell / CELL)
                if all(_separated(candidate, other, gap) for other in placed):
                    placed.append(candidate)
                    break
            else:
                break
        if len(placed) < len(objects):
            continue
        if scene.relation and not _relation_holds(
            scene.relation, [p for p in placed if p.group == 0], [p for p in placed if p.group == 1]
        ):
            continue
        return placed
    raise RuntimeError(f"could not lay out {scene} on {width}x{height}")


def draw_placed(placed: list[Placed], background: str | None, width: int, height: int) -> Image.Image:
    """Draw objects at given placements (`layout`'s, or an edit's) on a background (None: the default white)."""
    canvas = Image.new("RGB", (width * SUPERSAMPLE, height * SUPERSAMPLE), BACKGROUNDS[background or DEFAULT_BACKGROUND])
    draw = ImageDraw.Draw(canvas)
    for p in placed:
        s = SUPERSAMPLE
        draw_shape(draw, p.shape, p.cx * s, p.cy * s, p.side * s, COLOURS[p.colour])
    return canvas.resize((width, height), Image.BOX)


def render(scene: Scene, seed: int, width: int = 64, height: int = 64) -> Image.Image:
    """Draw a scene; the same (scene, seed, size) always gives the same pixels."""
    return draw_placed(layout(scene, np.random.default_rng(seed), width, height), scene.background, width, height)


def render_prompt(prompt: str, seed: int, width: int = 64, height: int = 64) -> Image.Image:
    """Ground truth for a prompt: parse it and draw its scene."""
    return render(parse_prompt(prompt), seed, width, height)
