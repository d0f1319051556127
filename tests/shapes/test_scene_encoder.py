"""The scene encoder (T5 slot): per-token targets follow the grammar, and training teaches the first group's place,
which a causal encoder cannot know when it reads those words."""

import numpy as np
import torch

from ladd.logs import MetricsLog
from ladd.shapes.grammar import PLACES, group_places, parse_prompt, scene_to_prompt, word_groups
from ladd.shapes.scene_encoder import (
    BACKGROUND_CLASSES,
    GROUP_CLASSES,
    IGNORE,
    sample_batch,
    token_targets,
    train_scene_encoder,
)
from ladd.shapes.zoo import build_tokenizer

PROMPT = "two small green triangles above a yellow square on a black background"


def test_word_groups_and_places_follow_the_prompt():
    scene = parse_prompt(PROMPT)
    words = scene_to_prompt(scene).split()
    groups = word_groups(scene)
    assert len(groups) == len(words)
    assert [w for w, g in zip(words, groups) if g == 0] == ["two", "small", "green", "triangles"]
    assert [w for w, g in zip(words, groups) if g == 1] == ["a", "yellow", "square"]
    assert group_places(scene) == ("above", "below")
    assert group_places(parse_prompt("a red circle right of a blue cross")) == ("right", "left")
    assert group_places(parse_prompt("a red circle")) == ("alone",)


def test_token_targets_label_each_group_word_and_only_those():
    targets = token_targets(parse_prompt(PROMPT), max_length=16)
    tokenizer = build_tokenizer()
    ids = tokenizer(PROMPT, padding="max_length", max_length=16).input_ids
    words = ["<bos>"] + PROMPT.split()
    assert ids[0] == tokenizer.bos_token_id and len(PROMPT.split()) + 2 <= 16
    colour = {words[i]: GROUP_CLASSES["colour"][c] for i, c in enumerate(targets["colour"][: len(words)]) if c != IGNORE}
    assert colour == {"two": "green", "small": "green", "green": "green", "triangles": "green",
                      "a": "yellow", "yellow": "yellow", "square": "yellow"}
    places = [PLACES[p] for p in targets["place"] if p != IGNORE]
    assert places == ["above"] * 4 + ["below"] * 3
    assert targets["count"][1] == GROUP_CLASSES["count"].index(2)
    assert targets["size"][6] == GROUP_CLASSES["size"].index(None)  # "a yellow square" names no size
    assert set(targets["background"]) == {BACKGROUND_CLASSES.index("black")}
    assert targets["place"][0] == IGNORE and targets["place"][5] == IGNORE  # BOS, "above"


def test_training_teaches_places_to_a_bidirectional_encoder(tmp_path):
    """The logged place accuracy is measured on each step's fresh prompts before the update on them."""
    tokenizer = build_tokenizer()
    cfg = dict(layers=2, heads=4, ff_mult=2, batch_size=128, steps=500, lr=2e-3, warmup=20)  # crosses 95% near step 350
    log = MetricsLog(tmp_path / "scene_encoder.csv")
    encoder = train_scene_encoder(tokenizer, cfg, width=64, log=log, seed=0)
    rows = log.path.read_text().splitlines()
    assert rows[0] == "step,loss,place_accuracy"
    first, last = (float(rows[i].split(",")[2]) for i in (1, -1))
    assert first < 0.5 < 0.95 < last
    # the encoder is the pipeline's T5 slot: one state per token, at the transformer's joint-attention width
    ids, _ = sample_batch(np.random.default_rng(1), tokenizer, 4, 16, exclude=set())
    with torch.no_grad():
        assert encoder(input_ids=ids).last_hidden_state.shape == (4, 16, 64)
