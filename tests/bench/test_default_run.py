"""`python -m bench.run` with no arguments, on the smoke zoo (the real zoo build at tiny sizes)."""

import json

import pandas as pd
import pytest

import ladd.paths
from bench import backbones, registry
from bench.errors import BenchError
from bench.run import main
from ladd.shapes.zoo import SCENE_SEQUENCE_LENGTH


@pytest.fixture
def smoke_models(smoke_zoo, monkeypatch, tmp_path):
    models, _ = smoke_zoo
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    monkeypatch.setattr(backbones, "SHAPES_CLIP_DIR", models / "shapes-clip")
    monkeypatch.setattr(ladd.paths, "RESULTS_DIR", tmp_path / "results")
    return models


def test_no_arguments_runs_the_shapes_teacher_on_the_shapes_suite(smoke_models, tmp_path, capsys):
    assert not (smoke_models / "shapes-turbo").exists()  # so the teacher is the default
    assert main([]) == 0
    out = tmp_path / "results" / "shapes-sd3-shapes"
    printed = capsys.readouterr().out
    for column in ("accuracy", "clip_score", "fd_clip", "single", "two_object"):
        assert column in printed

    heldout = pd.read_csv(ladd.paths.PROMPTS_DIR / "shapes_heldout.csv", keep_default_na=False)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == len(heldout)
    # per-prompt sizes are honoured
    assert manifest.sort_values("prompt_id")[["width", "height"]].values.tolist() == \
        heldout[["width", "height"]].values.tolist()
    scores = json.loads((out / "scores.json").read_text())["shapes"]
    assert 0 <= scores["accuracy"] <= 1 and -1 <= scores["clip_score"] <= 1 and scores["fd_clip"] >= 0
    assert scores["clip_backbone"].endswith("shapes-clip")
    assert set(scores["per_category"]) == set(heldout["category"])
    config = json.loads((out / "config.json").read_text())
    # the folder's sampling defaults reach the pipeline call: the scene encoder's token stream length
    assert config["model"] == "shapes-sd3" and config["call_kwargs"]["max_sequence_length"] == SCENE_SEQUENCE_LENGTH


def test_student_is_preferred_when_present(smoke_models, tmp_path, capsys, monkeypatch):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(smoke_models, models)
    shutil.copytree(models / "shapes-sd3", models / "shapes-turbo")
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    assert main(["--limit", "4", "--no-score"]) == 0
    manifest = pd.read_parquet(tmp_path / "results" / "shapes-turbo-shapes" / "manifest.parquet")
    assert set(manifest["model"]) == {"shapes-turbo"} and len(manifest) == 4


def test_vae_option_decodes_through_the_slim_vae_and_a_run_keeps_its_decoder(smoke_models, tmp_path):
    slim = smoke_models / "shapes-slim-vae"
    assert main(["--limit", "4", "--steps", "2", "--no-score", "--vae", str(slim)]) == 0
    out = tmp_path / "results" / "shapes-sd3-shapes-2step-vae-shapes-slim-vae"
    config = json.loads((out / "config.json").read_text())
    assert config["vae"] == {"class": "AutoencoderKL", "source": str(slim.resolve())}
    assert len(pd.read_parquet(out / "manifest.parquet")) == 4
    # the same folder without --vae would mix two decoders' images: refused
    with pytest.raises(BenchError, match="vae, vae_fingerprint differ"):
        main(["--limit", "4", "--steps", "2", "--no-score", "--out", str(out)])


def test_vae_option_errors_write_nothing(smoke_models, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(BenchError, match="is not a VAE folder"):
        main(["--limit", "2", "--no-score", "--out", str(out), "--vae", str(tmp_path / "missing")])
    from diffusers import AutoencoderKL

    other = AutoencoderKL.from_pretrained(smoke_models / "shapes-slim-vae")
    other.register_to_config(shift_factor=0.5)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(BenchError, match="does not share the model's latent space: shift_factor 0.5 vs the model's"):
        main(["--limit", "2", "--no-score", "--out", str(out), "--vae", str(tmp_path / "other")])
    assert not out.exists()
