"""The model registry: names, defaults, local folders and checkpoints, and missing weights without the network."""

import json
import socket
import sys
import types

import pytest

from bench import registry
from bench.errors import BenchError
from bench.registry import ModelUnavailable, check_available, list_models, load_model, resolve_model

REQUIRED = ["sd3-turbo", "sd3", "sd3-medium", "sdxl-turbo", "sdxl", "sdxl-lightning", "lcm-sdxl", "flux-schnell",
            "pixart-sigma", "playground-v2.5"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_registry_has_the_issue_models_with_defaults():
    for name in REQUIRED:
        spec = resolve_model(name)
        assert spec.kind == "hub" and "/" in spec.source
        assert {"num_inference_steps", "guidance_scale", "height", "width"} <= set(spec.defaults)
    assert resolve_model("sd3-turbo").source == "stabilityai/stable-diffusion-3.5-large-turbo"
    assert resolve_model("sd3").source == "stabilityai/stable-diffusion-3.5-large"
    assert resolve_model("sd3-medium").source == "stabilityai/stable-diffusion-3-medium-diffusers"
    assert resolve_model("sdxl-lightning").scheduler == ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"})
    assert resolve_model("sdxl-turbo").defaults["num_inference_steps"] == 1


def test_list_models_names_everything_and_says_sd3_turbo_was_never_released(no_network):
    text = list_models()
    for name in REQUIRED + ["shapes-turbo", "shapes-sd3"]:
        assert name in text
    assert "never released" in text
    assert "ladd_checkpoint.json" in text


def test_local_pipeline_folder_uses_its_sampling_defaults(tiny_pipeline_dir):
    spec = resolve_model(str(tiny_pipeline_dir))
    assert spec.kind == "folder"
    assert spec.defaults["max_sequence_length"] == 0 and spec.defaults["num_inference_steps"] == 4
    pipe = load_model(spec)
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"


def test_checkpoint_folder_is_loaded_through_ladd_checkpoint(tmp_path, tiny_pipeline_dir, monkeypatch):
    folder = tmp_path / "step-1000"
    folder.mkdir()
    record = {"iteration": 1000, "teacher": str(tiny_pipeline_dir), "student_config": {"num_layers": 2},
              "tags": {"generator_depth": 1}}
    (folder / "ladd_checkpoint.json").write_text(json.dumps(record))
    calls = []

    def load_student_pipeline(path):
        from ladd.pipelines import load_pipeline

        calls.append(path)
        return load_pipeline(tiny_pipeline_dir)

    monkeypatch.setitem(sys.modules, "ladd.checkpoint",
                        types.SimpleNamespace(load_student_pipeline=load_student_pipeline))
    spec = resolve_model(str(folder))
    assert spec.kind == "checkpoint"
    load_model(spec)
    assert calls == [str(folder.resolve())]
    assert registry.checkpoint_tags(spec) == {"student_depth": 2, "teacher_depth": 1, "iteration": 1000,
                                              "generator_depth": 1}


def test_unknown_model_and_bad_folder():
    with pytest.raises(BenchError, match="unknown model 'sd4'.*--list-models"):
        resolve_model("sd4")
    with pytest.raises(ModelUnavailable, match="not a diffusers pipeline folder"):
        resolve_model("./no/such/folder")


def test_missing_hub_weights_offline_is_one_clear_message(offline, no_network):
    spec = resolve_model("sd3-turbo")
    with pytest.raises(ModelUnavailable) as error:
        check_available(spec)
    message = str(error.value)
    for part in ("stabilityai/stable-diffusion-3.5-large-turbo", "licence", "huggingface-cli login",
                 "HF_HUB_OFFLINE", "--model /local/dir"):
        assert part in message
    assert "\n" not in message
    with pytest.raises(ModelUnavailable):
        load_model(spec)  # load_model checks first: no network, no traceback


def test_extra_unet_repo_is_named_when_missing(offline, no_network):
    with pytest.raises(ModelUnavailable) as error:
        check_available(resolve_model("sdxl-lightning"))
    assert "ByteDance/SDXL-Lightning" in str(error.value)


def test_hub_failure_during_download_becomes_one_line(monkeypatch, no_network):
    from huggingface_hub.errors import GatedRepoError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "hub_offline", lambda: False)

    from unittest import mock

    url = "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/resolve/main/model_index.json"
    response = mock.Mock(status_code=401, headers={})  # stands in for the hub client's HTTP response

    def gated(spec, device):
        raise GatedRepoError(f"401 Client Error.\nCannot access gated repo for url {url}.", response=response)

    monkeypatch.setattr(registry, "_load_hub_pipeline", gated)
    with pytest.raises(ModelUnavailable) as error:
        load_model(resolve_model("sd3"))
    message = str(error.value)
    assert "GatedRepoError" in message and "stabilityai/stable-diffusion-3.5-large" in message
    assert "\n" not in message


def test_default_model_prefers_the_student(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    with pytest.raises(ModelUnavailable, match="no embedded model"):
        registry.default_model()
    for name in ("shapes-sd3", "shapes-turbo"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text("{}")
        (tmp_path / name / "sampling_defaults.json").write_text(json.dumps({"num_inference_steps": 4}))
        assert registry.default_model() == ("shapes-sd3" if name == "shapes-sd3" else "shapes-turbo")
    spec = resolve_model("shapes-turbo")
    assert spec.kind == "folder" and spec.source == str(tmp_path / "shapes-turbo")
    assert spec.defaults == {"num_inference_steps": 4}


def test_a_shapes_model_not_committed_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    with pytest.raises(ModelUnavailable, match=r"python -m ladd\.shapes\.image_to_image inpaint"):
        resolve_model("shapes-sd3-inpaint")
    with pytest.raises(ModelUnavailable, match="update your checkout"):
        resolve_model("shapes-turbo")
