"""Inpainting masks: deterministic from (image id, seed), coverage statistics per policy, policy recorded."""

import numpy as np
import pytest

from bench.masks import LAMA_PRESETS, MASK_POLICIES, make_mask, mask_image, mask_policy_for, masked_input

N = 40  # masks per policy for the statistics (about 0.2 s per policy at 128 px)


def coverages(policy, size=(128, 128), n=N):
    return np.array([make_mask(f"img{i}", 0, *size, policy)[0].mean() for i in range(n)])


@pytest.mark.parametrize("policy", MASK_POLICIES + ("mixed",))
def test_same_id_and_seed_give_the_same_mask(policy):
    a, policy_a = make_mask("000000000139", 7, 96, 64, policy)
    b, policy_b = make_mask("000000000139", 7, 96, 64, policy)
    assert a.shape == (64, 96) and a.dtype == bool
    np.testing.assert_array_equal(a, b)
    assert policy_a == policy_b
    others = [make_mask("000000000139", seed, 96, 64, policy)[0] for seed in range(8, 12)]
    others += [make_mask(f"other{i}", 7, 96, 64, policy)[0] for i in range(4)]
    assert any(not np.array_equal(a, o) for o in others)


# Mean coverage per policy at 128 px, measured over 40 masks (docs/bench.md lists them): thin ≈ .30,
# medium ≈ .30, thick ≈ .41, round ≈ .14, rectangle ≈ .15, outpaint ≈ .27. The bounds are wide enough for any
# seed yet fail if a preset is mis-scaled (e.g. LaMa's pixel sizes applied to a 128 px image unscaled).
COVERAGE_BOUNDS = {"thin": (0.15, 0.45), "medium": (0.15, 0.45), "thick": (0.25, 0.6), "round": (0.06, 0.25),
                   "rectangle": (0.08, 0.25), "outpaint": (0.15, 0.4)}


@pytest.mark.parametrize("policy", MASK_POLICIES)
def test_coverage_statistics(policy):
    values = coverages(policy)
    low, high = COVERAGE_BOUNDS[policy]
    assert low < values.mean() < high, (policy, values.mean())
    assert (values > 0).all() and (values < 1).all()  # never empty, never the whole image


def test_thick_masks_cover_more_than_thin_and_medium():
    thin, medium, thick = (coverages(p).mean() for p in ("thin", "medium", "thick"))
    assert thick > thin and thick > medium


def test_coverage_is_scale_invariant():
    # LaMa's presets are pixels of a 512 crop; they are scaled with the image.
    for policy in ("thin", "thick", "outpaint"):
        small, large = coverages(policy, (128, 128)).mean(), coverages(policy, (256, 256)).mean()
        assert abs(small - large) < 0.05, (policy, small, large)


def test_outpaint_masks_touch_the_border_only_as_bands():
    for i in range(20):
        mask, _ = make_mask(f"img{i}", 0, 80, 60, "outpaint")
        # every masked pixel lies in a full-width row band or a full-height column band
        rows_full, cols_full = mask.all(axis=1), mask.all(axis=0)
        assert (mask == (rows_full[:, None] | cols_full[None, :])).all()


def test_thin_preset_has_no_boxes_and_lama_numbers():
    assert LAMA_PRESETS["thin"].boxes is None
    assert (LAMA_PRESETS["thin"].strokes.min_strokes, LAMA_PRESETS["thin"].strokes.max_strokes) == (4, 70)
    assert LAMA_PRESETS["medium"].boxes.max_size == 150 and LAMA_PRESETS["thick"].boxes.margin == 10


def test_mixed_policy_is_recorded_and_predictable():
    drawn = [make_mask(f"img{i}", 3, 64, 64, "mixed")[1] for i in range(60)]
    assert set(drawn) == set(MASK_POLICIES)  # all six appear among 60 images
    assert drawn == [mask_policy_for(f"img{i}", 3, "mixed") for i in range(60)]
    assert mask_policy_for("x", 0, "thin") == "thin"
    with pytest.raises(ValueError, match="unknown mask policy"):
        make_mask("x", 0, 8, 8, "blob")


def test_mask_image_and_masked_input():
    from PIL import Image

    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 2] = True
    as_image = mask_image(mask)
    assert as_image.mode == "L" and as_image.getpixel((2, 1)) == 255 and as_image.getpixel((0, 0)) == 0
    shown = masked_input(Image.new("RGB", (4, 4), (200, 10, 10)), mask)
    assert shown.getpixel((2, 1)) == (127, 127, 127) and shown.getpixel((0, 0)) == (200, 10, 10)
