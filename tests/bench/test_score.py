"""bench.score on run folders written through the real journal/manifest code, with toy backbones."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.runfolder import Journal, merge_manifest, save_image
from bench.score import PER_IMAGE, Scorers, format_scores, score_run
from tests.bench.conftest import ToyCLIP, solid

RED, GREEN, YELLOW, BLUE = (255, 0, 0), (0, 255, 0), (255, 255, 0), (0, 0, 255)
INV_SQRT2 = 1 / math.sqrt(2)


def write_run(run_dir, suite, items):
    """items: dicts with at least prompt, image (PIL) and optional category / extra columns."""
    rows = []
    for i, item in enumerate(items):
        item = dict(item)
        image = item.pop("image")
        path = f"images/{suite}/{i:04d}_0.png"
        save_image(image, run_dir / path)
        for key in [k for k, v in item.items() if isinstance(v, Image.Image)]:
            extra_path = f"{key}s/{suite}/{i:04d}.png"
            save_image(item.pop(key), run_dir / extra_path)
            item[key.replace("_image", "_path")] = extra_path
        rows.append({"suite": suite, "prompt_id": f"{i:04d}", "category": "", "challenge": "", "sample_index": 0,
                     "seed": i, "model": "toy", "steps": 1, "guidance": 0.0, "width": image.width,
                     "height": image.height, "path": path, "seconds_per_batch": 0.1, **item})
    Journal(run_dir).append(rows)
    return merge_manifest(run_dir)


def test_text_to_image_clip_score_overall_and_per_category(tmp_path):
    write_run(tmp_path, "drawbench", [
        {"prompt": "red", "category": "Colors", "image": solid(RED)},
        {"prompt": "red", "category": "Colors", "image": solid(YELLOW)},
        {"prompt": "green", "category": "Counting", "image": solid(GREEN)},
    ])
    scores = score_run(tmp_path, Scorers(clip_backbones={"drawbench": ToyCLIP()}))
    result = scores["drawbench"]
    assert result["n_images"] == 3
    assert result["clip_score"] == pytest.approx((1 + INV_SQRT2 + 1) / 3)
    assert result["per_category"]["Colors"] == {"n_images": 2, "clip_score": pytest.approx((1 + INV_SQRT2) / 2)}
    assert result["per_category"]["Counting"]["clip_score"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    per_image = pd.read_parquet(tmp_path / PER_IMAGE)
    assert per_image["clip_score"].tolist() == pytest.approx([1.0, INV_SQRT2, 1.0])
    table = format_scores(scores)
    assert "clip_score" in table and "Colors" in table and "toy-clip" in table


def test_shapes_suite_accuracy_and_frechet_against_ground_truth(tmp_path):
    from ladd.shapes.render import render_prompt

    prompts = [("a red circle", "single"), ("two blue squares", "counting"), ("a green cross", "single"),
               ("three yellow triangles", "counting")]
    items = []
    for seed, (prompt, category) in enumerate(prompts):
        truth = render_prompt(prompt, seed, 64, 48)
        # the second image of each category is blank: exactly half the images are correct
        image = truth if seed < 2 else Image.new("RGB", (64, 48), (245, 245, 245))
        items.append({"prompt": prompt, "category": category, "image": image})
    write_run(tmp_path, "shapes", items)
    scores = score_run(tmp_path, Scorers(clip_backbones={"shapes": ToyCLIP()}))["shapes"]
    assert scores["accuracy"] == 0.5
    assert scores["per_category"]["single"]["accuracy"] == 0.5
    assert scores["per_category"]["counting"]["accuracy"] == 0.5
    assert scores["fd_clip"] > 0
    assert "fd_clip" not in scores["per_category"]["single"]  # overall only


def test_shapes_ground_truth_against_itself_has_zero_frechet_distance(tmp_path):
    from ladd.shapes.render import render_prompt

    prompts = ["a red circle", "two blue squares", "a green cross", "a large purple square"]
    write_run(tmp_path, "shapes", [{"prompt": p, "category": "x", "image": render_prompt(p, seed, 64, 64)}
                                   for seed, p in enumerate(prompts)])
    scores = score_run(tmp_path, Scorers(clip_backbones={"shapes": ToyCLIP()}))["shapes"]
    assert scores["accuracy"] == 1.0
    assert 0 <= scores["fd_clip"] < 1e-5


def test_editing_metrics(tmp_path):
    write_run(tmp_path, "pie-bench", [
        {"prompt": "yellow", "category": "change color", "image": solid(YELLOW), "source_image": solid(RED),
         "source_prompt": "red", "target_prompt": "yellow"},
        {"prompt": "blue", "category": "random", "image": solid(GREEN), "source_image": solid(RED),
         "source_prompt": "red", "target_prompt": "blue"},
    ])
    scores = score_run(tmp_path, Scorers(clip_backbones={"pie-bench": ToyCLIP()}))["pie-bench"]
    assert scores["clip_image_similarity"] == pytest.approx((INV_SQRT2 + 0.0) / 2)
    assert scores["clip_direction_similarity"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["per_category"]["random"]["clip_direction_similarity"] == pytest.approx(0.5)


class RedValue(torch.nn.Module):
    num_features = 1

    def forward(self, images):
        return images[:, 0, 0, 0].double().unsqueeze(1)


def test_inpainting_fid_and_lpips_per_mask_policy(tmp_path):
    def grey(v):
        return solid((v, 0, 0))

    write_run(tmp_path, "coco-inpaint", [
        {"prompt": "a", "image": grey(1), "source_image": grey(0), "mask_policy": "thin"},
        {"prompt": "b", "image": grey(3), "source_image": grey(2), "mask_policy": "thin"},
        {"prompt": "c", "image": grey(5), "source_image": grey(2), "mask_policy": "outpaint"},
    ])
    mean_abs = lambda x, y: (x - y).abs().mean(dim=(1, 2, 3))  # noqa: E731
    scores = score_run(tmp_path, Scorers(fid_feature=RedValue(), lpips_net=mean_abs))["coco-inpaint"]
    # real {0, 2, 2}: mean 4/3, var 4/3; fake {1, 3, 5}: mean 3, var 4
    expected = (3 - 4 / 3) ** 2 + 4 / 3 + 4 - 2 * math.sqrt(4 / 3 * 4)
    assert scores["fid"] == pytest.approx(expected, rel=1e-6)
    # |Δred| / 255 × 2 in [-1, 1], averaged over 3 channels
    by_hand = [2 * d / 255 / 3 for d in (1, 1, 3)]
    assert scores["lpips"] == pytest.approx(sum(by_hand) / 3)
    assert scores["per_category"]["thin"]["lpips"] == pytest.approx(by_hand[0])
    assert scores["per_category"]["outpaint"]["n_images"] == 1


def test_scores_of_other_suites_are_kept(tmp_path):
    write_run(tmp_path, "drawbench", [{"prompt": "red", "category": "Colors", "image": solid(RED)}])
    (tmp_path / "scores.json").write_text(json.dumps({"parti": {"clip_score": 0.3, "per_category": {}}}))
    scores = score_run(tmp_path, Scorers(clip_backbones={"drawbench": ToyCLIP()}))
    assert scores["parti"]["clip_score"] == 0.3 and scores["drawbench"]["clip_score"] == pytest.approx(1.0)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(BenchError, match="not a run folder"):
        score_run(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The command line


def score_cli(monkeypatch, capsys, *argv):
    import sys

    from ladd.cli import run_cli
    from bench.score import main

    monkeypatch.setattr(sys, "argv", ["python -m bench.score", *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, "python -m bench.score")
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_score_command_with_a_hugging_face_clip(tmp_path, tiny_clip_dir, monkeypatch, capsys):
    write_run(tmp_path, "drawbench", [{"prompt": "A red colored car.", "category": "Colors", "image": solid(RED)},
                                      {"prompt": "Two cats.", "category": "Counting", "image": solid(GREEN)}])
    code, out, _ = score_cli(monkeypatch, capsys, tmp_path, "--clip", tiny_clip_dir)
    assert code == 0 and "Colors" in out and "clip_score" in out
    scores = json.loads((tmp_path / "scores.json").read_text())["drawbench"]
    assert scores["clip_backbone"] == str(tiny_clip_dir) and -1 <= scores["clip_score"] <= 1


def test_score_command_errors_are_one_line(tmp_path, offline, monkeypatch, capsys):
    code, _, err = score_cli(monkeypatch, capsys, tmp_path / "nothing")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a run folder" in err
    write_run(tmp_path, "drawbench", [{"prompt": "red", "category": "Colors", "image": solid(RED)}])
    code, _, err = score_cli(monkeypatch, capsys, tmp_path)  # the paper's ViT-g-14 is not on disk
    assert code == 2 and len(err.strip().splitlines()) == 1 and "ViT-g-14" in err
    assert not (tmp_path / "scores.json").exists()


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "models" / "shapes-clip" / "config.json").is_file(),
                    reason="the trained shapes CLIP (models/shapes-clip) is not built yet")
def test_trained_shapes_clip_separates_matching_from_shuffled_prompts(tmp_path):
    """With the real shapes CLIP: ground-truth renders score high on their own prompts, low on shuffled ones."""
    import random

    from ladd.shapes.heldout import load_heldout
    from ladd.shapes.render import render_prompt

    heldout = load_heldout().groupby("category").head(8)
    prompts = list(heldout["prompt"])
    shuffled = prompts[:]
    random.Random(0).shuffle(shuffled)
    results = {}
    for name, texts in (("truth", prompts), ("shuffled", shuffled)):
        run_dir = tmp_path / name
        write_run(run_dir, "shapes", [
            {"prompt": text, "category": category, "image": render_prompt(drawn, seed, int(w), int(h))}
            for seed, (text, drawn, category, w, h) in enumerate(zip(texts, prompts, heldout["category"],
                                                                    heldout["width"], heldout["height"]))])
        results[name] = score_run(run_dir)["shapes"]
    assert results["truth"]["accuracy"] == 1.0
    assert results["truth"]["clip_score"] > results["shuffled"]["clip_score"] + 0.3
