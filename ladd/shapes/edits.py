"""The shapes edit world: instruction edits of rendered scenes, with their exact edit region and an exact evaluator.

An edit takes a source scene, laid out by the renderer, to a target scene by one instruction:

    recolour    "make the circle blue"                  one group's colour
    reshape     "turn the red circle into a square"      one group's shape
    resize      "make the two crosses large"             one group's size (its objects grow or shrink in place)
    add         "add a small red square left of the triangle"   a new object in a relation to the scene's group
    remove      "remove the cross"                       one of two groups
    move        "move the circle right of the square"    one group re-placed so the relation changes
    background  "make the background black"             the background colour

Source and target are drawn from the same placements: every object the instruction does not name stays exactly
where it was, so the two images differ only inside the edit region (the footprints of the edited objects before and
after, or, for a background edit, every pixel but the objects' insides).

`evaluate_edit` scores an edited image against its source: the target caption's exact checks (`evaluate_scene`), a
removed group's absence, and preservation — every untouched object found again at its place in its colour and shape,
and the pixels outside the edit region close to the source's (PSNR above `PRESERVE_PSNR`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from ladd.shapes.evaluate import Evaluation, evaluate_scene, group_objects
from ladd.shapes.grammar import (BACKGROUNDS, COLOURS, COUNT_WORDS, DEFAULT_BACKGROUND, INVERSE_RELATION, MAX_OBJECTS,
                                 PLURALS, RELATIONS, SHAPES, SIZES, ObjectGroup, Scene, group_phrase, sample_scene,
                                 scene_to_prompt)
from ladd.shapes.render import (BASE_SIDE, CELL, CELLS, MARGIN, Placed, _relation_holds, _separated, draw_placed,
                                layout)

EDIT_KINDS = ("recolour", "reshape", "resize", "add", "remove", "move", "background")
PRESERVE_PSNR = 20.0  # dB outside the edit region (the shapes VAE round-trips renders at a median 35, 5th pct. 27)
POSITION_TOLERANCE = 4.0  # pixels at a 64 px short side: an untouched object found within this of its place
REGION_PAD = 1  # pixels around each footprint (anti-aliasing never reaches further)
MAX_TRIES = 200


@dataclass(frozen=True)
class Edit:
    kind: str
    source: Scene
    target: Scene
    instruction: str
    source_objects: tuple[Placed, ...]
    target_objects: tuple[Placed, ...]
    edited: tuple[int, ...]  # indices into source_objects of the objects the instruction names (moved, removed, ...)
    width: int
    height: int

    @property
    def source_prompt(self) -> str:
        return scene_to_prompt(self.source)

    @property
    def target_prompt(self) -> str:
        return scene_to_prompt(self.target)

    @property
    def untouched(self) -> tuple[Placed, ...]:
        return tuple(p for i, p in enumerate(self.source_objects) if i not in self.edited)

    def render(self) -> tuple[Image.Image, Image.Image]:
        """(source image, target image)."""
        return (draw_placed(list(self.source_objects), self.source.background, self.width, self.height),
                draw_placed(list(self.target_objects), self.target.background, self.width, self.height))

    def region(self) -> np.ndarray:
        """(height, width) bool: the pixels the edit may change."""
        if self.kind == "background":  # everything the new colour reaches, anti-aliased object edges included
            source, target = (np.asarray(image, dtype=np.int16) for image in self.render())
            return ndimage.binary_dilation(np.abs(source - target).sum(-1) > 0, iterations=REGION_PAD)
        changed = [self.source_objects[i] for i in self.edited] + [p for p in self.target_objects
                                                                   if p not in self.untouched]
        return footprint_mask(changed, self.width, self.height)


def footprint_mask(objects, width: int, height: int) -> np.ndarray:
    """The objects' layout footprints (the side plus its margins), padded by REGION_PAD pixels."""
    mask = np.zeros((height, width), dtype=bool)
    for p in objects:
        half = p.side / 2 + MARGIN * min(width, height) / BASE_SIDE + REGION_PAD
        top, bottom = max(0, int(np.floor(p.cy - half))), min(height, int(np.ceil(p.cy + half)))
        left, right = max(0, int(np.floor(p.cx - half))), min(width, int(np.ceil(p.cx + half)))
        mask[top:bottom, left:right] = True
    return mask


# --- instructions ---------------------------------------------------------------------------------------------


def refer(scene: Scene, index: int) -> str:
    """How an instruction names group `index`: "the circle", "the red circle" (another group has that shape),
    "the two crosses"."""
    group = scene.groups[index]
    others = [g for i, g in enumerate(scene.groups) if i != index]
    words = ["the"] + (["two"] if group.count == 2 else ["three"] if group.count == 3 else [])
    if any(g.shape == group.shape for g in others):
        words.append(group.colour)
    words.append(group.shape if group.count == 1 else PLURALS[group.shape])
    return " ".join(words)


def instruction_for(kind: str, source: Scene, index: int, target: Scene) -> str:
    new = target.groups[index] if kind not in ("add", "remove", "background") else None
    if kind == "recolour":
        return f"make {refer(source, index)} {new.colour}"
    if kind == "reshape":
        noun = new.shape if new.count == 1 else PLURALS[new.shape]
        return f"turn {refer(source, index)} into {COUNT_WORDS[new.count] if new.count > 1 else 'a'} {noun}"
    if kind == "resize":
        return f"make {refer(source, index)} {new.size}"
    if kind == "add":  # target = (added, existing) with the relation of the added group to the existing one
        return f"add {group_phrase(target.groups[0])} {target.relation} {refer(target, 1)}"
    if kind == "remove":
        return f"remove {refer(source, index)}"
    if kind == "move":
        other = 1 - index
        relation = target.relation if index == 0 else INVERSE_RELATION[target.relation]
        return f"move {refer(source, index)} {relation} {refer(source, other)}"
    if kind == "background":
        return f"make the background {target.background}"
    raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")


# --- sampling edits -------------------------------------------------------------------------------------------


def _cell(width: int, height: int) -> float:
    return CELL * min(width, height) / BASE_SIDE


def _placement(group_index: int, group: ObjectGroup, left: int, top: int, cells: int, cell: float) -> Placed:
    return Placed(group_index, group.shape, group.colour, (left + cells / 2) * cell, (top + cells / 2) * cell,
                  cells * cell - 2 * MARGIN * cell / CELL)


def _fits(candidates: list[Placed], fixed: list[Placed], relation: str | None, cell: float) -> bool:
    gap = 2 * MARGIN * cell / CELL
    everything = fixed + candidates
    if any(not _separated(a, b, gap) for i, a in enumerate(everything) for b in everything[i + 1:]):
        return False
    if relation is None:
        return True
    return _relation_holds(relation, [p for p in everything if p.group == 0], [p for p in everything if p.group == 1])


def _place(rng: np.random.Generator, groups: list[tuple[int, ObjectGroup, int]], fixed: list[Placed],
           relation: str | None, width: int, height: int, near: list[Placed] | None = None) -> list[Placed] | None:
    """New placements for `groups` ((group index, group, cells) per object) beside the `fixed` objects so that the
    relation holds; with `near`, each object first tries the cells around its old place. None if nothing fits."""
    cell = _cell(width, height)
    columns, rows = round(width / cell), round(height / cell)
    for attempt in range(MAX_TRIES):
        placed = []
        for k, (gi, group, cells) in enumerate(groups):
            if near is not None and attempt < MAX_TRIES // 2:
                old = near[k]
                anchor = (int(round(old.cx / cell - cells / 2)), int(round(old.cy / cell - cells / 2)))
                left = int(np.clip(anchor[0] + rng.integers(-1, 2), 0, columns - cells))
                top = int(np.clip(anchor[1] + rng.integers(-1, 2), 0, rows - cells))
            else:
                left, top = int(rng.integers(0, columns - cells + 1)), int(rng.integers(0, rows - cells + 1))
            placed.append(_placement(gi, group, left, top, cells, cell))
        if _fits(placed, fixed, relation, cell):
            return placed
    return None


def _cells_of(p: Placed, width: int, height: int) -> int:
    return 2 if p.side > _cell(width, height) else 1


def _drawn_size(objects: list[Placed], width: int, height: int) -> str:
    return "large" if _cells_of(objects[0], width, height) == CELLS["large"] else "small"


def _with_group(scene: Scene, index: int, group: ObjectGroup) -> Scene:
    return replace(scene, groups=scene.groups[:index] + (group,) + scene.groups[index + 1:])


def _source_scene(rng: np.random.Generator, kind: str) -> Scene:
    if kind == "add":  # one group with room for one more object
        while True:
            scene = sample_scene(rng, str(rng.choice(["single", "size", "counting"])))
            if scene.num_objects < MAX_OBJECTS:
                return scene
    if kind in ("remove", "move"):
        return sample_scene(rng, str(rng.choice(["two_object", "mixed"])))
    return sample_scene(rng)


def _try_edit(rng: np.random.Generator, kind: str, width: int, height: int) -> Edit | None:
    source = _source_scene(rng, kind)
    objects = layout(source, rng, width, height)
    index = int(rng.integers(len(source.groups)))
    mine = [i for i, p in enumerate(objects) if p.group == index]
    others = [p for p in objects if p.group != index]
    group = source.groups[index]
    target, target_objects, edited = None, None, tuple(mine)

    if kind in ("recolour", "reshape"):
        if kind == "recolour":
            new = replace(group, colour=str(rng.choice([c for c in COLOURS if c != group.colour])))
        else:
            new = replace(group, shape=str(rng.choice([s for s in SHAPES if s != group.shape])))
        try:
            target = _with_group(source, index, new)
        except ValueError:  # both groups would be alike
            return None
        target_objects = [replace(p, colour=new.colour, shape=new.shape) if i in mine else p
                          for i, p in enumerate(objects)]
    elif kind == "resize":
        drawn = _drawn_size([objects[i] for i in mine], width, height)
        size = "small" if drawn == "large" else "large"
        source = _with_group(source, index, replace(group, size=drawn))  # the source caption states the size
        target = _with_group(source, index, replace(group, size=size))
        moved = _place(rng, [(index, group, CELLS[size]) for _ in mine], others, source.relation, width, height,
                       near=[objects[i] for i in mine])
        if moved is None:
            return None
        target_objects = others + moved
    elif kind == "add":
        new = ObjectGroup(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), 1,
                          str(rng.choice(SIZES)) if rng.random() < 0.5 else None)
        relation = str(rng.choice(RELATIONS))
        try:  # the added group comes first: "add X left of the Y" -> "X left of Y"
            target = Scene((new, group), relation, source.background)
        except ValueError:
            return None
        existing = [replace(p, group=1) for p in objects]
        added = _place(rng, [(0, new, CELLS[new.size or str(rng.choice(SIZES))])], existing, relation, width, height)
        if added is None:
            return None
        index, edited = 0, ()
        target_objects = objects + added  # the existing objects keep their place (their group index is cosmetic)
    elif kind == "remove":
        target = Scene((source.groups[1 - index],), None, source.background)
        target_objects = others
    elif kind == "move":
        relation = str(rng.choice([r for r in RELATIONS if r != source.relation]))  # how groups[0] stands to [1]
        target = replace(source, relation=relation)
        moved = _place(rng, [(index, group, _cells_of(objects[i], width, height)) for i in mine], others, relation,
                       width, height)
        if moved is None:
            return None
        target_objects = others + moved
    elif kind == "background":
        current = source.background or DEFAULT_BACKGROUND
        target = replace(source, background=str(rng.choice([b for b in BACKGROUNDS if b != current])))
        target_objects, edited = objects, ()
    else:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    return Edit(kind, source, target, instruction_for(kind, source, index, target), tuple(objects),
                tuple(target_objects), edited, width, height)


def sample_edit(rng: np.random.Generator, kind: str, width: int = 64, height: int = 64) -> Edit:
    """A random edit of `kind` on a random scene of the given size."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    for _ in range(MAX_TRIES):
        edit = _try_edit(rng, kind, width, height)
        if edit is not None:
            return edit
    raise RuntimeError(f"no {kind} edit found on {width}x{height}")


def edit_from_seed(kind: str, seed: int, width: int, height: int) -> Edit:
    """The edit a (kind, seed, size) names: how edit files record an edit exactly."""
    return sample_edit(np.random.default_rng(seed), kind, width, height)


# --- the evaluator ----------------------------------------------------------------------------------------------


@dataclass
class EditEvaluation:
    edit_checks: dict[str, bool]  # the target caption's checks, and a removed group's absence
    preservation_checks: dict[str, bool]  # untouched objects in place, pixels outside the region kept
    psnr: float
    target: Evaluation | None = field(default=None, repr=False)

    @property
    def edit_correct(self) -> bool:
        return all(self.edit_checks.values())

    @property
    def preserved(self) -> bool:
        return all(self.preservation_checks.values())

    @property
    def correct(self) -> bool:
        return self.edit_correct and self.preserved

    @property
    def checks(self) -> dict[str, bool]:
        return {**{f"edit:{k}": v for k, v in self.edit_checks.items()},
                **{f"preserve:{k}": v for k, v in self.preservation_checks.items()}}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 pixel arrays (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) if a.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def evaluate_edit(edited: Image.Image, source: Image.Image, edit: Edit) -> EditEvaluation:
    """Score an edited image against the source image it was made from."""
    edited = edited.convert("RGB").resize((edit.width, edit.height), Image.BICUBIC) \
        if edited.size != (edit.width, edit.height) else edited.convert("RGB")
    target = evaluate_scene(edited, edit.target, edit.target_prompt)
    edit_checks = dict(target.checks)
    if edit.kind == "remove":
        removed = next(g for g in edit.source.groups if g not in edit.target.groups)
        edit_checks["removed"] = not group_objects(target.objects, removed)
    scale = min(edit.width, edit.height) / BASE_SIDE
    preservation = {}
    for k, p in enumerate(edit.untouched):
        preservation[f"object_{k}"] = any(
            o.colour == p.colour and o.shape == p.shape and abs(o.cx - p.cx) <= POSITION_TOLERANCE * scale
            and abs(o.cy - p.cy) <= POSITION_TOLERANCE * scale for o in target.objects)
    outside = ~edit.region()
    value = psnr(np.asarray(edited)[outside], np.asarray(source.convert("RGB"))[outside])
    preservation["outside_psnr"] = value >= PRESERVE_PSNR
    return EditEvaluation(edit_checks, preservation, value, target)

