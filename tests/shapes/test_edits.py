"""The shapes edit world: edits round-trip through the grammar, the renderer keeps untouched objects fixed, and the
edit evaluator passes rendered targets and fails unedited sources and wrong edits."""

import re
from dataclasses import replace

import numpy as np
import pytest

from ladd.shapes.edits import EDIT_KINDS, POSITION_TOLERANCE, evaluate_edit, edit_from_seed, sample_edit
from ladd.shapes.grammar import parse_prompt
from ladd.shapes.render import BUCKETS, draw_placed

INSTRUCTIONS = {
    "recolour": r"^make the (two |three )?(\w+ )?\w+ (red|yellow|green|blue|purple|pink)$",
    "reshape": r"^turn the (two |three )?(\w+ )?\w+ into (a|two|three) \w+$",
    "resize": r"^make the (two |three )?(\w+ )?\w+ (small|large)$",
    "add": r"^add (a|an) ((small|large) )?\w+ \w+ (left of|right of|above|below) the (two |three )?(\w+ )?\w+$",
    "remove": r"^remove the (two |three )?(\w+ )?\w+$",
    "move": r"^move the (two |three )?(\w+ )?\w+ (left of|right of|above|below) the (two |three )?(\w+ )?\w+$",
    "background": r"^make the background (white|gray|black)$",
}


def edits(n_per_kind: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sample_edit(rng, kind, *BUCKETS[i % 3]) for i in range(n_per_kind) for kind in EDIT_KINDS]


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_every_kind_round_trips_through_the_grammar_with_a_natural_instruction(kind):
    for edit in [e for e in edits(6, seed=1) if e.kind == kind]:
        assert parse_prompt(edit.source_prompt) == edit.source and parse_prompt(edit.target_prompt) == edit.target
        assert edit.source != edit.target and re.match(INSTRUCTIONS[kind], edit.instruction), edit.instruction
    assert edit_from_seed(kind, 7, 96, 64) == edit_from_seed(kind, 7, 96, 64)  # an edit is named by its seed


def test_the_renderer_keeps_untouched_objects_fixed_and_changes_only_the_region():
    for edit in edits(10):
        source, target = (np.asarray(image) for image in edit.render())
        outside = ~edit.region()
        assert np.array_equal(source[outside], target[outside]), edit.instruction
        assert not np.array_equal(source, target)
        assert all(p in edit.target_objects for p in edit.untouched)
        if edit.kind == "add":
            assert len(edit.target_objects) == len(edit.source_objects) + 1


def test_the_evaluator_passes_rendered_targets_and_fails_unedited_sources():
    results = [(evaluate_edit(target, source, edit), evaluate_edit(source, source, edit))
               for edit in edits(20) for source, target in [edit.render()]]
    assert np.mean([truth.correct for truth, _ in results]) >= 0.99
    assert not any(unedited.edit_correct for _, unedited in results)
    assert all(unedited.preserved for _, unedited in results)  # nothing outside the region changed


def test_the_evaluator_fails_wrong_edits():
    rng = np.random.default_rng(3)
    wrong = 0
    for _ in range(20):
        edit = sample_edit(rng, "recolour")
        source, target = edit.render()
        # the instruction carried out on an untouched object too: the target caption may still hold, preservation not
        bystanders = [replace(p, colour=edit.target_objects[edit.edited[0]].colour) if p in edit.untouched else p
                      for p in edit.target_objects]
        if bystanders != list(edit.target_objects):
            evaluation = evaluate_edit(draw_placed(bystanders, edit.target.background, edit.width, edit.height),
                                       source, edit)
            assert not evaluation.preserved
            wrong += 1
        # an untouched object moved by two cells
        if edit.untouched:
            moved = [replace(p, cx=(p.cx + 32) % edit.width) if p == edit.untouched[0] else p
                     for p in edit.target_objects]
            assert not evaluate_edit(draw_placed(moved, edit.target.background, edit.width, edit.height), source,
                                     edit).preserved
    assert wrong > 0
    move = sample_edit(np.random.default_rng(4), "move")
    source, _ = move.render()
    assert not evaluate_edit(source, source, move).edit_correct  # the relation was never changed


def test_preservation_tolerates_small_shifts_and_noise_but_not_a_changed_background():
    edit = sample_edit(np.random.default_rng(5), "recolour", 64, 64)
    source, target = edit.render()
    pixels = np.asarray(target).astype(np.int16)
    noisy = np.clip(pixels + np.random.default_rng(0).normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
    from PIL import Image

    assert evaluate_edit(Image.fromarray(noisy), source, edit).correct  # mild noise: a decoder's error
    flipped = pixels.copy()
    flipped[~edit.region()] = 255 - flipped[~edit.region()]
    result = evaluate_edit(Image.fromarray(flipped.astype(np.uint8)), source, edit)
    assert not result.preservation_checks["outside_psnr"] and result.psnr < 10
    assert POSITION_TOLERANCE < 16  # less than a layout cell: a moved object never passes
