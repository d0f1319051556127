"""The metrics log: rows flushed as they come; a resumed run goes on after the rows before its first step."""

import pandas as pd

from ladd.logs import MetricsLog


def test_resume_drops_the_rows_logged_past_the_checkpoint_and_goes_on(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    for step in range(6):  # a run killed after step 5, its last checkpoint after step 2
        log.write(step=step, loss=1.0 / (step + 1))
    resumed = MetricsLog(tmp_path / "metrics.csv")
    resumed.resume(3, "step")
    for step in range(3, 8):
        resumed.write(step=step, loss=0.5)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["step"].tolist() == list(range(8)) and list(table.columns) == ["step", "loss"]
    assert table["loss"].iloc[2] == 1.0 / 3  # the rows before the checkpoint are kept as written


def test_a_new_run_starts_a_new_log(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n0,9.0\n")
    log = MetricsLog(tmp_path / "metrics.csv")
    log.resume(0, "step")  # nothing done: a fresh run, not a resumed one
    log.write(step=0, loss=1.0)
    assert pd.read_csv(tmp_path / "metrics.csv")["loss"].tolist() == [1.0]
