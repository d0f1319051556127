"""A study's votes become preference pairs (the majority per comparison and question, after the report's
annotator filters, ties dropped) and a DPO run of a few iterations trains on them."""

import pandas as pd

from annotate import preferences, simulate, study
from annotate.preferences import majority_pairs
from bench.runfolder import fake_prompts, write_fake_run
from ladd.dpo import main as dpo
from ladd.preferences import read_preferences


def test_the_majority_decides_and_ties_are_dropped():
    votes = pd.DataFrame({
        "comparison": [1, 1, 1, 2, 2, 3],
        "question": ["alignment", "alignment", "alignment", "quality", "quality", "alignment"],
        "choice": ["left", "left", "right", "left", "right", "right"],
        "prompt": ["p1", "p1", "p1", "p2", "p2", "p3"],
        "left_path": ["a1", "a1", "a1", "a2", "a2", "a3"], "right_path": ["b1", "b1", "b1", "b2", "b2", "b3"]})
    pairs = majority_pairs(votes)
    assert pairs[["prompt", "preferred", "rejected", "source"]].values.tolist() == [
        ["p1", "a1", "b1", "study:alignment"], ["p3", "b3", "a3", "study:alignment"]]  # comparison 2 is a tie
    assert pairs["weight"].tolist() == [2 / 3, 1.0]
    assert majority_pairs(votes, ("quality",)).empty


def test_votes_to_pairs_to_a_dpo_run(smoke_teacher, tmp_path, capsys, cli):
    prompts = fake_prompts(6)
    runs = [write_fake_run(tmp_path / name, name, steps, prompts, samples=2, size=64, sharpness=sharpness)
            for name, steps, sharpness in (("student", 1, 0.5), ("teacher", 50, 1.0))]
    database = str(tmp_path / "study.db")
    assert study.main(["create", "--runs", *map(str, runs), "--samples-per-prompt", "2", "--views", "2",
                       "--batch-size", "6", "--db", database]) == 0
    assert simulate.main(["--db", database, "--annotators", "6", "--prefer-first", "0.8", "--careless", "0"]) == 0
    out = tmp_path / "pairs.parquet"
    assert preferences.main(["--db", database, "--out", str(out)]) == 0
    pairs = read_preferences(out)
    assert len(pairs) > 0 and set(pairs["source"]) <= {"study:alignment", "study:quality"}
    assert ((pairs["weight"] > 0.5) & (pairs["weight"] <= 1)).all()
    # mostly the model under test (the student, preferred with probability 0.8) wins
    assert pairs["preferred"].str.contains("/student/").mean() > 0.5
    assert dpo([f'model="{smoke_teacher}"', f'preferences="{out}"', f'out="{tmp_path / "dpo"}"', "iterations=2",
                "batch_size=2", "rank=2", "checkpoint_every=2"]) == 0
    assert (tmp_path / "dpo" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    capsys.readouterr()
    code, _, err = cli(preferences, "--db", str(tmp_path / "nothing.db"), "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
