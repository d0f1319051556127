"""`python -m bench.run` end to end on a tiny random SD3 folder, and its one-line errors (exit code 2)."""

import hashlib
import json
import sys

import pandas as pd
import pytest

from ladd.cli import run_cli
from bench.run import PROG, main
from tests.bench.conftest import run_module


def cli(monkeypatch, capsys, *argv):
    """Run bench.run in this process as the console would; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [PROG, *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, PROG)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROG}: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def folder_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_drawbench_and_parti128_end_to_end(tiny_pipeline_dir, tiny_clip_dir, tmp_path, cli_env, monkeypatch,
                                           capsys, offline):
    out = tmp_path / "results" / "tiny"
    done = run_module("bench.run", "--model", tiny_pipeline_dir, "--suite", "drawbench", "--limit", 8,
                      "--clip", tiny_clip_dir, "--batch-size", 4, "--out", out, env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "drawbench" in done.stdout and "clip_score" in done.stdout and "Colors" in done.stdout

    # The second suite into the same run folder, in process (same offline environment).
    code, stdout, _ = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "parti128", "--limit", 8,
                          "--clip", tiny_clip_dir, "--batch-size", 4, "--out", out)
    assert code == 0 and "parti128" in stdout

    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 16
    assert not manifest.duplicated(["suite", "prompt_id", "sample_index"]).any()
    assert manifest.groupby("suite").size().to_dict() == {"drawbench": 8, "parti128": 8}
    assert all((out / p).is_file() for p in manifest["path"])
    assert (manifest[["width", "height"]] == 32).all().all()
    assert set(manifest.loc[manifest["suite"] == "parti128", "challenge"]) <= {
        "Imagination", "Linguistic Structures", "Complex", "Fine-grained Detail", "Simple Detail",
        "Style & Format", "Writing & Symbols", "Quantity", "Perspective", "Properties & Positioning"}
    assert (manifest["steps"] == 4).all() and (manifest["guidance"] == 2.0).all()
    config = json.loads((out / "config.json").read_text())
    assert config["suite"] == ["drawbench", "parti128"]
    assert config["call_kwargs"]["max_sequence_length"] == 0
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"drawbench", "parti128"}
    assert -1 <= scores["drawbench"]["clip_score"] <= 1
    assert "Colors" in scores["drawbench"]["per_category"]

    # Rerunning finds everything done: no new image, same manifest.
    before = {p: (out / p).stat().st_mtime_ns for p in manifest["path"]}
    code, stdout, _ = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "drawbench,parti128",
                          "--limit", 8, "--clip", tiny_clip_dir, "--batch-size", 4, "--out", out)
    assert code == 0 and "(0 new" in stdout
    assert {p: (out / p).stat().st_mtime_ns for p in manifest["path"]} == before
    assert pd.read_parquet(out / "manifest.parquet").equals(manifest)


def test_bad_arguments_in_a_real_process(cli_env):
    done = run_module("bench.run", "--limit", "0", env=cli_env)
    assert_one_line_error(done.returncode, done.stderr, "--limit", "positive integer")
    assert "Traceback" not in done.stderr


def test_missing_weights_in_a_real_process(cli_env):
    done = run_module("bench.run", "--model", "sd3-turbo", "--suite", "drawbench", env=cli_env)
    assert_one_line_error(done.returncode, done.stderr, "stabilityai/stable-diffusion-3.5-large-turbo",
                          "huggingface-cli login", "HF_HUB_OFFLINE", "--model /local/dir")
    assert done.stdout == ""


@pytest.mark.parametrize("argv, fragments", [
    (["--suite", "nope"], ["unknown suite 'nope'", "drawbench"]),
    (["--suite", "drawbench", "--limit", "-3"], ["--limit", "positive integer"]),
    (["--suite", "drawbench", "--limit", "many"], ["--limit", "'many'"]),
    (["--samples-per-prompt", "0"], ["--samples-per-prompt"]),
    (["--guidance", "-1"], ["--guidance"]),
    (["--prompts", "no/such/file.txt"], ["prompt file no/such/file.txt not found"]),
    (["--suite", "custom"], ["needs --prompts"]),
    (["--model", "sd9", "--suite", "drawbench"], ["unknown model 'sd9'"]),
    (["--model", "sdxl", "--suite", "drawbench"], ["stabilityai/stable-diffusion-xl-base-1.0", "HF_HUB_OFFLINE"]),
    (["--suite", "pie-bench", "--data-dir", "{tmp}"], ["mapping_file.json", "--data-dir"]),
    (["--suite", "coco-inpaint", "--data-dir", "{tmp}"], ["val2017.zip"]),
    (["--tag", "oops"], ["KEY=VALUE"]),
    (["--mask-policy", "blob"], ["--mask-policy"]),
    (["--frobnicate"], ["unrecognized arguments"]),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, fragments, monkeypatch, capsys, offline, tiny_pipeline_dir):
    argv = [a.replace("{tmp}", str(offline)) for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(tiny_pipeline_dir)]
    code, stdout, err = cli(monkeypatch, capsys, *argv)
    assert_one_line_error(code, err, *fragments)


def test_missing_clip_weights_stop_the_run_before_generating(monkeypatch, capsys, offline, tiny_pipeline_dir,
                                                             tmp_path):
    out = tmp_path / "never"
    code, _, err = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "drawbench", "--out", out)
    assert_one_line_error(code, err, "ViT-g-14", "open_clip_pytorch_model.bin", "--no-score")
    assert not out.exists()


def test_list_models(monkeypatch, capsys):
    code, stdout, _ = cli(monkeypatch, capsys, "--list-models")
    assert code == 0 and "sd3-turbo" in stdout and "never released" in stdout


def test_bad_input_never_touches_an_existing_run(tiny_pipeline_dir, monkeypatch, capsys, offline, tmp_path):
    out = tmp_path / "run"
    code, _, _ = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "drawbench", "--limit", 2,
                     "--no-score", "--out", out)
    assert code == 0
    digest = folder_digest(out)
    for argv in (["--suite", "drawbench,nope"], ["--suite", "drawbench", "--steps", "9"],  # different settings
                 ["--suite", "drawbench", "--seed", "3"], ["--suite", "drawbench", "--batch-size", "1"],
                 ["--suite", "drawbench", "--limit", "x"]):
        code, _, err = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--no-score", "--out", out, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert folder_digest(out) == digest
    assert "different settings" in cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "drawbench",
                                       "--seed", "3", "--no-score", "--out", out)[2]


def random_lora(pipeline_dir, folder):
    """A rank-2 LoRA on every linear layer of the pipeline's transformer, with non-zero up-projections (a fresh
    LoRA is the identity), saved by diffusers' `save_lora_weights`."""
    import torch

    from ladd.dpo import add_lora, save_lora
    from ladd.pipelines import load_pipeline

    pipe = load_pipeline(pipeline_dir)
    transformer = add_lora(pipe.transformer, rank=2)
    torch.manual_seed(0)
    for name, parameter in transformer.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(std=0.5)
    return save_lora(type(pipe), transformer, folder)


def test_a_lora_is_merged_at_its_scale_and_tagged(tiny_pipeline_dir, monkeypatch, capsys, offline, tmp_path):
    lora = random_lora(tiny_pipeline_dir, tmp_path / "dpo" / "lora")
    images = {}
    for name, extra in (("plain", []), ("lora", ["--lora", lora]), ("zero", ["--lora", lora, "--lora-scale", 0])):
        out = tmp_path / name
        code, _, err = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "drawbench", "--limit", 2,
                           "--no-score", "--out", out, *extra)
        assert code == 0, err
        manifest = pd.read_parquet(out / "manifest.parquet").sort_values("path")
        images[name] = [(out / p).read_bytes() for p in manifest["path"]]
        tags = json.loads((out / "config.json").read_text())["tags"]
        assert (tags.get("lora_scale"), "lora" in tags) == {"plain": (None, False), "lora": (1.0, True),
                                                            "zero": (0.0, True)}[name]
    assert images["lora"] != images["plain"] and images["zero"] == images["plain"]


def test_a_folder_without_lora_weights_is_one_line_before_any_folder(tiny_pipeline_dir, monkeypatch, capsys,
                                                                     offline, tmp_path):
    out = tmp_path / "never"
    code, _, err = cli(monkeypatch, capsys, "--model", tiny_pipeline_dir, "--suite", "drawbench", "--no-score",
                       "--lora", tiny_pipeline_dir, "--out", out)
    assert_one_line_error(code, err, "--lora", "pytorch_lora_weights.safetensors")
    assert not out.exists()
