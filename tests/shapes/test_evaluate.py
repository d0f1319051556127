import numpy as np
import pytest

from ladd.shapes.evaluate import detect_objects, evaluate, evaluate_scene
from ladd.shapes.grammar import BACKGROUNDS, one_attribute_changes, sample_scene, scene_to_prompt
from ladd.shapes.render import BUCKETS, render, render_prompt


def test_rendered_truth_scores_at_least_99_percent():
    rng = np.random.default_rng(11)
    results = []
    for i in range(900):
        scene = sample_scene(rng)
        width, height = BUCKETS[i % 3]
        results.append(evaluate(render(scene, i, width, height), scene_to_prompt(scene)).correct)
    assert np.mean(results) >= 0.99


def test_wrong_prompts_fail():
    rng = np.random.default_rng(12)
    outcomes = []
    for i in range(300):
        scene = sample_scene(rng)
        image = render(scene, i, *BUCKETS[i % 3])
        for wrong in one_attribute_changes(scene):
            outcomes.append(evaluate_scene(image, wrong).correct)
    assert len(outcomes) > 3000
    assert not any(outcomes)


def test_checks_name_what_failed():
    image = render_prompt("a red circle left of a blue square", 0)
    result = evaluate(image, "a red circle right of a blue square")
    assert result.checks["object_0"] and result.checks["object_1"] and not result.checks["relation"]
    assert result.score == pytest.approx(4 / 5)
    result = evaluate(image, "two red circles left of a blue square")
    assert not result.checks["count_0"] and not result.correct


def test_detects_shapes_and_background():
    objects, background = detect_objects(render_prompt("a small green cross right of a large purple triangle on a gray background", 4))
    assert background == "gray"
    assert sorted((o.colour, o.shape) for o in objects) == [("green", "cross"), ("purple", "triangle")]


def test_noise_and_blank_images_pass_nothing():
    rng = np.random.default_rng(0)
    from PIL import Image

    blank = Image.new("RGB", (64, 64), BACKGROUNDS["white"])
    assert not evaluate(blank, "a red circle").correct
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert not evaluate(noise, "a red circle").correct
