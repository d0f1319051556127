"""The shapes world's fixed prompt sets are reproducible from their seeds, and validation never touches the test set."""

import pandas as pd

from ladd.shapes.grammar import parse_prompt
from ladd.shapes.heldout import HELDOUT_PATH, VAL_PATH, main, make_heldout, make_validation


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    for split, shipped in (("heldout", HELDOUT_PATH), ("val", VAL_PATH)):
        out = tmp_path / f"{split}.csv"
        main(["--split", split, "--out", str(out)])
        assert out.read_bytes() == shipped.read_bytes()


def test_validation_set_is_disjoint_from_heldout_and_in_the_grammar():
    heldout, val = make_heldout(), make_validation()
    assert not set(heldout["prompt"]) & set(val["prompt"])
    assert val.groupby("category").size().tolist() == [128] * 4
    for prompt in val["prompt"].unique():
        parse_prompt(prompt)  # raises outside the grammar
    assert isinstance(val, pd.DataFrame) and set(zip(val["width"], val["height"])) == {(64, 64), (96, 64), (64, 96)}
