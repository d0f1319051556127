"""The failed-check tally, on a run folder of rendered ground truth with one image paired to a wrong prompt."""

import pandas as pd
import pytest
from failed_checks import confusion_table, count_confusion, failed_checks, failure_table, main

from bench.runfolder import MANIFEST
from ladd.shapes.grammar import parse_prompt
from ladd.shapes.render import render


def test_tally_counts_what_fails_and_table_reads_it(tmp_path):
    images = [  # (prompt drawn, prompt judged against, category)
        ("a red circle", "a red circle", "single"),
        ("two blue squares", "a blue square", "single"),  # right objects, wrong count
        ("a green cross left of a pink triangle", "a green cross right of a pink triangle", "two_object"),
    ]
    (tmp_path / "images").mkdir()
    rows = []
    for i, (drawn, judged, category) in enumerate(images):
        path = f"images/{i}.png"
        render(parse_prompt(drawn), seed=i, width=64, height=64).save(tmp_path / path)
        rows.append({"prompt_id": f"{i:04d}", "prompt": judged, "category": category, "path": path})
    pd.DataFrame(rows).to_parquet(tmp_path / MANIFEST)

    checks = failed_checks(tmp_path)
    failed = checks[~checks.passed]
    assert sorted(zip(failed.category, failed.check)) == [("single", "count"), ("two_object", "relation")]
    assert len(checks[(checks.category == "two_object") & (checks.check == "object")]) == 2  # one per group
    table = failure_table(checks)
    assert "| single | count | 1 | 2 | 50.0 |" in table
    assert "| two_object | relation | 1 | 1 | 100.0 |" in table

    # the two one-group prompts: one circle asked and drawn; one square asked, two drawn
    counts = count_confusion(tmp_path)
    assert sorted(map(tuple, counts.to_numpy())) == [(1, 1), (1, 2)]
    confusion = confusion_table(counts)
    assert "| asked | images | drew 0 | drew 1 | drew 2 | drew 3 | drew 4+ |" in confusion
    assert "| 1 | 2 | 0.0 | 50.0 | 50.0 | 0.0 | 0.0 |" in confusion


def test_cli_rejects_a_folder_without_a_manifest(tmp_path):
    with pytest.raises(SystemExit, match="no manifest.parquet"):
        main([str(tmp_path)])
