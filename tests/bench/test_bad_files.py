"""Unreadable prompt and dataset files: one line and exit code 2 from a real `python -m bench.run`, never a
traceback; the packaged loaders given such files raise one SuiteDataError."""

import json

import pytest

from bench.suites import SuiteDataError, read_drawbench, read_parti, read_parti128, read_shapes
from tests.bench.conftest import run_module

PROG = "python -m bench.run"
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"


def assert_one_line(done, *fragments):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), done.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("name, content, fragments", [
    ("empty.csv", b"", ["empty.csv is empty"]),
    ("empty.txt", b"", ["no prompts in"]),
    ("blank.csv", b"\n\n  \n", ["blank.csv is empty"]),
    ("latin1.csv", "prompt\ncaf\xe9 au lait\n".encode("latin-1"), ["not UTF-8", "0xe9", "re-save it as UTF-8"]),
    ("binary.txt", PNG_BYTES, ["not UTF-8", "0x89"]),
    ("ragged.csv", b'prompt,category\n"an open quote,x\n', ["not a readable CSV"]),
    ("header-only.csv", b"prompt,category\n", ["no prompts in"]),
    ("no-prompt-column.csv", b"text\nhello\n", ["no 'prompt' column"]),
])
def test_a_bad_prompt_file_is_one_line_in_a_real_process(tmp_path, cli_env, name, content, fragments):
    path = tmp_path / name
    path.write_bytes(content)
    done = run_module("bench.run", "--prompts", path, "--no-score", "--out", tmp_path / "run", env=cli_env)
    assert_one_line(done, str(path), *fragments)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_folder_given_as_the_prompt_file(tmp_path, cli_env):
    done = run_module("bench.run", "--prompts", tmp_path, "--no-score", "--out", tmp_path / "run", env=cli_env)
    assert_one_line(done, str(tmp_path))


@pytest.mark.parametrize("suite, layout", [
    ("pie-bench", {"mapping_file.json": "{\"0\": \"caf\xe9\"}".encode("latin-1")}),
    ("pie-bench", {"mapping_file.json": b""}),
    ("pie-bench", {"mapping_file.json": b"[1, 2]"}),
    ("coco-inpaint", {"annotations/captions_val2017.json": b"", "val2017/.keep": b""}),
    ("coco-inpaint", {"annotations/captions_val2017.json": json.dumps({"images": [{"id": 1}],
                                                                        "annotations": [{"id": 2}]}).encode(),
                      "val2017/.keep": b""}),
])
def test_a_bad_dataset_file_is_one_line_in_a_real_process(tmp_path, cli_env, suite, layout):
    for relative, content in layout.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    done = run_module("bench.run", "--suite", suite, "--data-dir", tmp_path, "--no-score", "--out",
                      tmp_path / "run", env=cli_env)
    assert_one_line(done, next(iter(layout)).split("/")[-1])


@pytest.mark.parametrize("reader, content, message", [
    (read_drawbench, b"", "is empty"),
    (read_drawbench, "Prompt,Category\ncaf\xe9,Colors\n".encode("latin-1"), "not UTF-8"),
    (read_parti, b"", "is empty"),
    (read_parti, "Prompt\tCategory\tChallenge\n\xff\tx\ty\n".encode("latin-1"), "not UTF-8"),
    (read_parti128, b"\xfe\xff", "not UTF-8"),
    (read_shapes, b"", "is empty"),
    (read_shapes, b"prompt,category,width,height\na red circle,single,wide,64\n", "whole numbers"),
])
def test_the_suite_loaders_given_bad_files(tmp_path, reader, content, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(SuiteDataError, match=message) as error:
        reader(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
