import numpy as np
import pytest

from ladd.shapes.grammar import BACKGROUNDS, parse_prompt, sample_scene
from ladd.shapes.render import BUCKETS, render, render_prompt


@pytest.mark.parametrize("width,height", BUCKETS)
def test_render_is_deterministic_and_sized(width, height):
    scene = parse_prompt("two small green triangles above a yellow square")
    first = render(scene, 7, width, height)
    assert first.size == (width, height) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(render(scene, 7, width, height)))
    assert not np.array_equal(np.asarray(first), np.asarray(render(scene, 8, width, height)))


def test_edges_are_anti_aliased():
    image = np.asarray(render_prompt("a large red circle", 0))
    red, white = np.array([220, 40, 40]), np.array(BACKGROUNDS["white"])
    pure = (image == red).all(-1) | (image == white).all(-1)
    assert 0 < (~pure).sum() < 0.2 * pure.size  # blended edge pixels exist, but only on edges


def test_background_is_painted():
    image = np.asarray(render_prompt("a blue square on a black background", 3))
    assert tuple(image[0, 0]) == BACKGROUNDS["black"]


def test_every_sampled_scene_can_be_laid_out_on_every_bucket():
    rng = np.random.default_rng(3)
    for i in range(300):
        width, height = BUCKETS[i % 3]
        render(sample_scene(rng), i, width, height)
