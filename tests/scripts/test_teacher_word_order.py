"""The word-order script's prompt pairs and its embedding table (run on a tiny random pipeline)."""

from teacher_word_order import opposite, paraphrase, pooled_similarities

from ladd.shapes.zoo import random_pipeline


def test_opposite_swaps_groups_and_paraphrase_keeps_the_scene():
    prompt = "a red circle left of two blue squares"
    assert opposite(prompt) == "two blue squares left of a red circle"
    assert paraphrase(prompt) == "two blue squares right of a red circle"


def test_pooled_similarities_table():
    prompts = ["a red circle left of a blue square", "a green cross above a pink triangle"]
    rows = pooled_similarities(random_pipeline(), prompts, max_sequence_length=0)
    assert rows[0].startswith("| pooled text embedding") and len(rows) == 5
    cosines = [float(row.split("|")[2]) for row in rows[2:4]]
    assert all(-1 <= c <= 1 for c in cosines)
    assert rows[4].rstrip(" |").endswith("%")
