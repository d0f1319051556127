"""Fixtures for the benchmark tests: a tiny random SD3 pipeline, a tiny CLIP folder, toy backbones, and an
environment in which nothing can reach the network or find real weights."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]

# Colour words → the RGB direction the toy CLIP embeds them as (see ToyCLIP).
TOY_TEXT = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0),
            "white": (1.0, 1.0, 1.0), "purple": (0.6, 0.2, 0.8)}


class ToyCLIP:
    """A CLIP whose image embedding is the mean RGB colour and whose text embedding is the colour word's RGB,
    both L2-normalised: cosines are computable by hand."""

    name = "toy-clip"
    embed_dim = 3

    def encode_images(self, images):
        means = np.stack([np.asarray(im.convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) for im in images])
        return torch.nn.functional.normalize(torch.from_numpy(means), dim=-1)

    def encode_texts(self, texts):
        # the first colour word in the text (so "a red circle" embeds like "red")
        words = [next(w for w in text.split() if w in TOY_TEXT) for text in texts]
        return torch.nn.functional.normalize(torch.tensor([TOY_TEXT[w] for w in words], dtype=torch.float64), dim=-1)


def solid(rgb, size=(8, 8)) -> Image.Image:
    return Image.new("RGB", size, tuple(rgb))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine the OpenMP threads of an
    in-process run fight the other load (measured: 7.6 s with one thread, 28 s with two). Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def toy_clip():
    return ToyCLIP()


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A loadable random-weight SD3 pipeline folder (4 steps, 32×32, max_sequence_length 0)."""
    from ladd.shapes.zoo import random_pipeline

    folder = tmp_path_factory.mktemp("models") / "tiny-sd3"
    random_pipeline(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random tiny Hugging Face CLIP folder (CLIPModel + CLIPProcessor) built like the shapes CLIP."""
    from transformers import CLIPModel, CLIPProcessor

    from ladd.shapes.zoo import TINY, build_tokenizer, clip_config, clip_image_processor

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    folder = tmp_path_factory.mktemp("models") / "tiny-clip"
    CLIPModel(clip_config(tokenizer, TINY["clip"])).save_pretrained(folder)
    CLIPProcessor(image_processor=clip_image_processor(64), tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No hub, an empty Hugging Face cache and an empty TORCH_HOME, for this process."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


@pytest.fixture
def cli_env(tmp_path) -> dict:
    """Environment for `python -m bench.run` subprocesses: offline, empty caches, one thread."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), TORCH_HOME=str(tmp_path / "torch-home"),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("HF_HUB_CACHE", None)
    return env


def run_module(module: str, *args, env: dict, cwd: Path | None = None, timeout: float = 300):
    import subprocess

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, cwd=cwd or REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


# Datasets in their published layouts


def rle_of(mask: np.ndarray) -> list[int]:
    """Encode a boolean mask as PIE-Bench does: [start, length, ...] over the row-major flattening."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    changes = np.flatnonzero(np.diff(flat))
    starts, ends = changes[0::2], changes[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


@pytest.fixture
def pie_bench_dir(tmp_path):
    root = tmp_path / "PIE-Bench"
    (root / "annotation_images" / "0_random_140").mkdir(parents=True)
    (root / "annotation_images" / "6_change_attribute_color_40").mkdir(parents=True)
    mask = np.zeros((512, 512), dtype=bool)
    mask[10:12, 500:512] = True  # two runs of 12 pixels at the right edge of rows 10 and 11
    mapping = {
        "000000000001": {
            "image_path": "0_random_140/000000000001.jpg",
            "original_prompt": "a [cat] sitting on a bench",
            "editing_prompt": "a [dog] sitting on a bench",
            "editing_instruction": "Change the cat to a dog",
            "editing_type_id": "0",
            "blended_word": "cat dog",
            "mask": rle_of(mask),
        },
        "600000000002": {
            "image_path": "6_change_attribute_color_40/600000000002.jpg",
            "original_prompt": "a [red] car",
            "editing_prompt": "a [blue] car",
            "editing_instruction": "Make the car blue",
            "editing_type_id": "6",
            "blended_word": "car car",
            "mask": [0, 3],
        },
    }
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    for item in mapping.values():
        Image.new("RGB", (512, 512), (90, 120, 30)).save(root / "annotation_images" / item["image_path"])
    return tmp_path, mask


@pytest.fixture
def coco_dir(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    captions = {
        "info": {}, "licenses": [],
        "images": [
            {"id": 139, "file_name": "000000000139.jpg", "height": 48, "width": 64},
            {"id": 42, "file_name": "000000000042.jpg", "height": 64, "width": 48},
            {"id": 7, "file_name": "000000000007.jpg", "height": 32, "width": 32},  # no caption
        ],
        "annotations": [
            {"id": 900, "image_id": 139, "caption": "A woman stands in the dining area at the table."},
            {"id": 12, "image_id": 139, "caption": "A room with chairs,  a table, and a woman in it. "},
            {"id": 5, "image_id": 42, "caption": "A dog on a couch."},
        ],
    }
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps(captions))
    for image in captions["images"]:
        Image.new("RGB", (image["width"], image["height"]), (1, 2, 3)).save(tmp_path / "val2017" / image["file_name"])
    return tmp_path


