"""scripts/prompt_gap.py on the smoke zoo: training prompts come from the synth shards, one set per bucket."""

from collections import Counter

import numpy as np

from ladd.shapes.grammar import parse_prompt, scene_category
from prompt_gap import gap_row, main, training_prompts


def test_training_prompts_follow_the_validation_mix(smoke_latents):
    items = training_prompts(smoke_latents, per_category=1)
    assert {(w, h) for _, w, h in items} == {(64, 64), (96, 64), (64, 96)}
    per_bucket = Counter((w, h, scene_category(parse_prompt(p))) for p, w, h in items)
    assert set(per_bucket.values()) == {1} and "mixed" not in {c for _, _, c in per_bucket}


def test_table_compares_both_prompt_sets(smoke_teacher, smoke_latents, capsys):
    main(["--student", str(smoke_teacher), "--teacher", str(smoke_teacher), "--data", str(smoke_latents),
          "--per-category", "1", "--val-limit", "3", "--samples-per-prompt", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| training") or
            line.startswith("| validation")]
    assert len(rows) == 2 and rows[1].split(" | ")[1] == "6"  # 3 prompts, 2 images each
    assert "±" in rows[0]


def test_gap_row_reports_the_paired_difference():
    teacher = np.array([True, True, False, False])
    student = np.array([True, False, False, True])
    row = gap_row("x", teacher, student)
    assert "| 50.0 | 50.0 | +0.0 ± 40.8 | 100% |" in row
