"""Findings commands sharing a work folder: a stage running in one is waited for, then skipped, by the other; one
protocol per folder."""

import fcntl
import json
import threading
import time

import pytest

from ladd.cli import LaddError
from ladd.shapes.findings.command import check_protocol, protocol_record
from ladd.shapes.findings.protocol import FULL, Layout
from ladd.shapes.findings.stages import Stage, marker_path, run_stages, select


def test_a_stage_running_elsewhere_is_waited_for_then_skipped(tmp_path):
    ran = []
    stages = [Stage("train-a", "train", step=lambda: ran.append("a")),
              Stage("train-b", "train", step=lambda: ran.append("b"))]
    lock = marker_path(tmp_path, "train-a").with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    result = {}
    with open(lock, "w") as other:  # another process is running train-a
        fcntl.flock(other, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: result.update(ran=run_stages(tmp_path, stages)))
        worker.start()
        time.sleep(0.5)
        assert ran == [] and worker.is_alive()  # waiting on train-a, not jumping ahead
        marker_path(tmp_path, "train-a").write_text(json.dumps({"module": None, "argv": []}))  # ... which finishes
        fcntl.flock(other, fcntl.LOCK_UN)
    worker.join(timeout=10)
    assert ran == ["b"] and result["ran"] == 1


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    # a lock file without a holder (its process died: the system released the lock) is no obstacle
    marker_path(tmp_path, "data-x").with_suffix(".lock").parent.mkdir(parents=True)
    marker_path(tmp_path, "data-x").with_suffix(".lock").write_text("")
    ran = []
    assert run_stages(tmp_path, [Stage("data-x", "data", step=lambda: ran.append("x"))]) == 1 and ran == ["x"]
    assert marker_path(tmp_path, "data-x").is_file()


def test_one_protocol_per_work_folder_and_settings_added_since_are_recorded(tmp_path):
    layout = Layout(tmp_path)
    check_protocol(layout, FULL)
    record = json.loads((tmp_path / "protocol.json").read_text())
    older = {k: v for k, v in record.items() if not k.startswith("dpo_")}  # a folder made before the DPO finding
    (tmp_path / "protocol.json").write_text(json.dumps(older))
    check_protocol(layout, FULL)
    assert json.loads((tmp_path / "protocol.json").read_text()) == protocol_record(FULL)
    (tmp_path / "protocol.json").write_text(json.dumps({**older, "iterations": 500}))
    with pytest.raises(LaddError, match="iterations differ"):
        check_protocol(layout, FULL)


def test_select_takes_a_group_or_one_stage_by_key():
    stages = [Stage("teacher-d2", "zoo"), Stage("teacher-d8", "zoo"), Stage("synth-g8", "data")]
    assert [s.key for s in select(stages, "all")] == ["teacher-d2", "teacher-d8", "synth-g8"]
    assert [s.key for s in select(stages, "zoo")] == ["teacher-d2", "teacher-d8"]
    assert [s.key for s in select(stages, "teacher-d8")] == ["teacher-d8"]  # e.g. one per core, two commands
    assert select(stages, "teacher-d3") == []
