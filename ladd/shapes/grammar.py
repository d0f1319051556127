"""The shapes world's prompt grammar: scene specs, prompts, and the exact round trip between them.

A scene has one or two object groups. A group is `count` identical objects (colour, shape, optional size).
Two groups are joined by a spatial relation; a background colour may be named. At most three objects in all,
so every scene fits on a 64-pixel canvas.

    "a red circle"
    "two small green triangles above a yellow square"
    "a large blue cross left of a pink circle on a black background"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

# Saturated, well-separated palette (no two palette colours closer than 108 in RGB; orange was dropped: too close to red and
# yellow once an autoencoder has blurred it); RGB values are what the renderer paints and the evaluator looks for.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "purple": (150, 50, 200),
    "pink": (245, 120, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
DEFAULT_BACKGROUND = "white"
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
MAX_OBJECTS = 3

# Every word a shapes prompt can contain, in a fixed order (the tokenizer's vocabulary is built from it).
VOCABULARY = (
    ["a", "an", "one", "two", "three", "on", "background", "left", "right", "of", "above", "below"]
    + list(SIZES)
    + list(COLOURS)
    + list(BACKGROUNDS)
    + list(SHAPES)
    + list(PLURALS.values())
)


@dataclass(frozen=True)
class ObjectGroup:
    colour: str
    shape: str
    count: int = 1
    size: str | None = None  # None: the prompt does not say, so the renderer picks and the evaluator ignores it

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {sorted(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {list(SHAPES)}")
        if self.count not in COUNT_WORDS:
            raise ValueError(f"count must be 1, 2 or 3, got {self.count}")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {list(SIZES)}")


@dataclass(frozen=True)
class Scene:
    groups: tuple[ObjectGroup, ...]
    relation: str | None = None  # how groups[0] stands to groups[1]
    background: str | None = None  # None: not named (rendered white, not checked)

    def __post_init__(self):
        if len(self.groups) not in (1, 2):
            raise ValueError("a scene has one or two object groups")
        if (len(self.groups) == 2) != (self.relation is not None):
            raise ValueError("two groups need a relation, one group takes none")
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r}; expected one of {list(RELATIONS)}")
        if self.background is not None and self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {sorted(BACKGROUNDS)}")
        if self.num_objects > MAX_OBJECTS:
            raise ValueError(f"at most {MAX_OBJECTS} objects per scene, got {self.num_objects}")
        if len(self.groups) == 2 and (self.groups[0].colour, self.groups[0].shape) == (
            self.groups[1].colour,
            self.groups[1].shape,
        ):
            raise ValueError("the two groups of a scene must differ in colour or shape")

    @property
    def num_objects(self) -> int:
        return sum(g.count for g in self.groups)


# --- scene -> prompt ---------------------------------------------------------------------------------------


def group_phrase(group: ObjectGroup) -> str:
    words = [w for w in (group.size, group.colour) if w]
    noun = group.shape if group.count == 1 else PLURALS[group.shape]
    article = COUNT_WORDS[group.count]
    if group.count == 1 and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *words, noun])


def scene_to_prompt(scene: Scene) -> str:
    text = group_phrase(scene.groups[0])
    if scene.relation:
        text += f" {scene.relation} {group_phrase(scene.groups[1])}"
    if scene.background:
        text += f" on a {scene.background} background"
    return text


def word_groups(scene: Scene) -> list[int | None]:
    """For each word of `scene_to_prompt(scene)`, the index of the object group it describes (None for the
    relation and background words)."""
    groups = [[0] * len(group_phrase(scene.groups[0]).split())]
    if scene.relation:
        groups += [[None] * len(scene.relation.split()), [1] * len(group_phrase(scene.groups[1]).split())]
    if scene.background:
        groups.append([None] * 4)  # "on a <colour> background"
    return [g for part in groups for g in part]


# Where each group stands: "alone" for a one-group scene; for "A <relation> B", A takes the relation's side and B
# the opposite one ("A left of B": A left, B right).
PLACES = ("alone", "left", "right", "above", "below")
_SIDE = {"left of": "left", "right of": "right", "above": "above", "below": "below"}


def group_places(scene: Scene) -> tuple[str, ...]:
    if scene.relation is None:
        return ("alone",)
    return _SIDE[scene.relation], _SIDE[INVERSE_RELATION[scene.relation]]


# --- prompt -> scene ---------------------------------------------------------------------------------------

_SINGULAR = {plural: shape for shape, plural in PLURALS.items()}
_COUNT_OF = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
_GROUP = (
    r"(?P<count{i}>a|an|one|two|three) (?:(?P<size{i}>small|large) )?(?P<colour{i}>{colours}) (?P<shape{i}>{shapes})"
)
_PATTERN = re.compile(
    "^"
    + _GROUP.format(i=0, colours="|".join(COLOURS), shapes="|".join([*SHAPES, *PLURALS.values()]))
    + "(?: (?P<relation>left of|right of|above|below) "
    + _GROUP.format(i=1, colours="|".join(COLOURS), shapes="|".join([*SHAPES, *PLURALS.values()]))
    + ")?"
    + f"(?: on a (?P<background>{'|'.join(BACKGROUNDS)}) background)?$"
)


def parse_prompt(prompt: str) -> Scene:
    """Parse a shapes-world prompt back into its scene; raise ValueError for text outside the grammar."""
    text = " ".join(prompt.lower().replace(".", " ").split())
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"not a shapes-world prompt: {prompt!r}")
    groups = []
    for i in range(2 if match["relation"] else 1):
        count, noun = _COUNT_OF[match[f"count{i}"]], match[f"shape{i}"]
        is_plural = noun in _SINGULAR
        if is_plural != (count > 1):
            raise ValueError(f"count and noun disagree in {prompt!r}")
        groups.append(ObjectGroup(match[f"colour{i}"], _SINGULAR.get(noun, noun), count, match[f"size{i}"]))
    return Scene(tuple(groups), match["relation"], match["background"])


# --- sampling scenes ----------------------------------------------------------------------------------------

# Scene kinds; the held-out benchmark reports accuracy per kind.
CATEGORIES = ("single", "two_object", "counting", "size")


def _group(rng: np.random.Generator, count: int, size_p: float) -> ObjectGroup:
    size = str(rng.choice(SIZES)) if rng.random() < size_p else None
    return ObjectGroup(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), count, size)


def sample_scene(rng: np.random.Generator, category: str | None = None, background_p: float = 0.3) -> Scene:
    """Draw a random scene. `category` restricts it to one benchmark kind; None draws from the full grammar."""
    if category is None:
        category = str(rng.choice(["single", "two_object", "counting", "size", "mixed"], p=[0.2, 0.3, 0.2, 0.1, 0.2]))
    background = str(rng.choice(list(BACKGROUNDS))) if rng.random() < background_p else None
    relation = str(rng.choice(RELATIONS))
    if category == "single":
        groups = (_group(rng, 1, size_p=0.0),)
    elif category == "size":
        groups = (replace(_group(rng, 1, 0.0), size=str(rng.choice(SIZES))),)
    elif category == "counting":
        groups = (_group(rng, int(rng.integers(2, 4)), size_p=0.3),)
    elif category == "two_object":
        groups = (_group(rng, 1, 0.2), _group(rng, 1, 0.2))
    elif category == "mixed":  # counts and relations together, e.g. "two small green triangles above a yellow square"
        groups = (_group(rng, int(rng.integers(1, 3)), 0.4), _group(rng, 1, 0.4))
    else:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES + ('mixed',)}")
    if len(groups) == 2:
        while (groups[1].colour, groups[1].shape) == (groups[0].colour, groups[0].shape):
            groups = (groups[0], _group(rng, groups[1].count, 0.4))
        return Scene(groups, relation, background)
    return Scene(groups, None, background)


def swap_groups(scene: Scene) -> Scene:
    """The same words with the two groups exchanged: "A left of B" -> "B left of A", the opposite layout."""
    if len(scene.groups) != 2:
        raise ValueError("only a scene with two groups has groups to swap")
    return replace(scene, groups=scene.groups[::-1])


def one_attribute_changes(scene: Scene) -> list[Scene]:
    """Every valid scene that differs from `scene` in exactly one stated attribute (a colour, a shape, a count, a
    size, the relation or the background). An image of `scene` refutes each of them: they are hard negatives for
    contrastive training and wrong prompts for testing the evaluator."""
    candidates = []  # (groups, relation, background)
    for i, group in enumerate(scene.groups):
        changed = [replace(group, colour=c) for c in COLOURS if c != group.colour]
        changed += [replace(group, shape=s) for s in SHAPES if s != group.shape]
        changed += [replace(group, count=n) for n in COUNT_WORDS if n != group.count]
        if group.size:
            changed += [replace(group, size=z) for z in SIZES if z != group.size]
        candidates += [(scene.groups[:i] + (g,) + scene.groups[i + 1 :], scene.relation, scene.background)
                       for g in changed]
    if scene.relation:
        candidates += [(scene.groups, r, scene.background) for r in RELATIONS if r != scene.relation]
    if scene.background:
        candidates += [(scene.groups, scene.relation, b) for b in BACKGROUNDS if b != scene.background]
    valid = []
    for groups, relation, background in candidates:
        try:
            valid.append(Scene(groups, relation, background))
        except ValueError:  # e.g. too many objects, or both groups alike
            continue
    return valid


def scene_category(scene: Scene) -> str:
    """The benchmark kind a scene belongs to (the inverse of `sample_scene(category=...)`)."""
    if len(scene.groups) == 2:
        return "two_object" if all(g.count == 1 for g in scene.groups) else "mixed"
    group = scene.groups[0]
    if group.count > 1:
        return "counting"
    return "size" if group.size else "single"
