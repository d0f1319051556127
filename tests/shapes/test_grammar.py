import numpy as np
import pytest

from ladd.shapes.grammar import (
    CATEGORIES,
    COLOURS,
    SHAPES,
    VOCABULARY,
    ObjectGroup,
    Scene,
    parse_prompt,
    sample_scene,
    scene_category,
    scene_to_prompt,
)


def test_round_trip_over_the_whole_grammar():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        scene = sample_scene(rng)
        assert parse_prompt(scene_to_prompt(scene)) == scene


@pytest.mark.parametrize("category", CATEGORIES)
def test_sampled_categories_are_recognised(category):
    rng = np.random.default_rng(1)
    for _ in range(200):
        assert scene_category(sample_scene(rng, category)) == category


def test_prompts_read_naturally():
    scene = Scene((ObjectGroup("green", "triangle", 2, "small"), ObjectGroup("yellow", "square")), "above")
    assert scene_to_prompt(scene) == "two small green triangles above a yellow square"
    scene = Scene((ObjectGroup("pink", "cross", 1, "large"),), None, "black")
    assert scene_to_prompt(scene) == "a large pink cross on a black background"


def test_parse_is_lenient_about_case_and_punctuation():
    assert parse_prompt("  A Red  circle. ") == Scene((ObjectGroup("red", "circle"),))
    assert parse_prompt("one blue square") == Scene((ObjectGroup("blue", "square"),))


@pytest.mark.parametrize(
    "prompt",
    [
        "a dog on a skateboard",
        "two red circle",  # count and noun disagree
        "a red circles",
        "a red circle left of",
        "an orange circle",
        "a red circle on a red background",
        "",
    ],
)
def test_text_outside_the_grammar_is_rejected(prompt):
    with pytest.raises(ValueError):
        parse_prompt(prompt)


def test_scene_validation():
    with pytest.raises(ValueError, match="at most 3"):
        Scene((ObjectGroup("red", "circle", 3), ObjectGroup("blue", "square")), "above")
    with pytest.raises(ValueError, match="differ"):
        Scene((ObjectGroup("red", "circle"), ObjectGroup("red", "circle")), "above")
    with pytest.raises(ValueError, match="relation"):
        Scene((ObjectGroup("red", "circle"), ObjectGroup("blue", "circle")))
    with pytest.raises(ValueError, match="unknown colour"):
        ObjectGroup("orange", "circle")


def test_grammar_has_the_promised_breadth():
    assert len(COLOURS) >= 6 and len(SHAPES) >= 4
    words = {w for p in (scene_to_prompt(sample_scene(np.random.default_rng(s))) for s in range(500)) for w in p.split()}
    assert words <= set(VOCABULARY)


def test_swap_groups_keeps_the_words_and_reverses_the_layout():
    from ladd.shapes.evaluate import evaluate
    from ladd.shapes.grammar import swap_groups
    from ladd.shapes.render import render

    scene = parse_prompt("two small green triangles above a yellow square")
    swapped = swap_groups(scene)
    assert scene_to_prompt(swapped) == "a yellow square above two small green triangles"
    assert sorted(scene_to_prompt(swapped).split()) == sorted(scene_to_prompt(scene).split())
    image = render(scene, 0, 64, 64)
    assert evaluate(image, scene_to_prompt(scene)).checks["relation"]
    assert not evaluate(image, scene_to_prompt(swapped)).checks["relation"]
    with pytest.raises(ValueError):
        swap_groups(parse_prompt("a red circle"))
