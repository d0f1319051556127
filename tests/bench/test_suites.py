"""Suite loaders on the shipped prompt files and on small fixtures in the datasets' published formats."""

import json

import numpy as np
import pytest

from bench import suites
from bench.errors import BenchError
from bench.suites import (SuiteDataError, decode_rle_mask, load_suite, match_key, read_coco_captions, read_drawbench,
                          read_parti, read_parti128, read_pie_bench, read_prompts_file, read_shapes)

# ---------------------------------------------------------------------------------------------------------------
# DrawBench


def test_drawbench_shipped_file():
    frame = read_drawbench()
    assert len(frame) == 200
    assert frame["prompt_id"].tolist()[:2] == ["0000", "0001"]
    counts = frame["category"].value_counts().to_dict()
    assert counts["Gary Marcus et al."] == 10  # the sheet's trailing space is stripped
    assert len(counts) == 11
    assert frame.loc[0, "prompt"] == "A red colored car."


@pytest.mark.parametrize("header", ["Prompt", "Prompts"])
def test_drawbench_both_headers(tmp_path, header):
    # The original sheet: `Prompts` header, a quoted prompt with a comma, a trailing-space category, no final newline.
    path = tmp_path / "drawbench.csv"
    path.write_text(f'{header},Category\nA red colored car.,Colors\n"A cat, a dog.",Gary Marcus et al. ',
                    encoding="utf-8")
    frame = read_drawbench(path)
    assert frame["prompt"].tolist() == ["A red colored car.", "A cat, a dog."]
    assert frame["category"].tolist() == ["Colors", "Gary Marcus et al."]


def test_drawbench_wrong_header_is_one_clear_error(tmp_path):
    path = tmp_path / "drawbench.csv"
    path.write_text("Text,Category\nx,y\n")
    with pytest.raises(SuiteDataError, match="expected columns Prompt"):
        read_drawbench(path)


# ---------------------------------------------------------------------------------------------------------------
# PartiPrompts


def test_parti_reads_all_rows_with_quoting_off():
    frame = read_parti()
    assert len(frame) == 1632
    quoted = frame[frame["prompt"].str.contains('"', regex=False)]
    assert len(quoted) == 22
    assert frame["prompt"].str.startswith('"').sum() == 1
    assert set(frame["challenge"]) >= {"Basic", "Complex", "Writing & Symbols"}


def test_parti_fixture_with_leading_quote(tmp_path):
    path = tmp_path / "parti.tsv"
    path.write_text('Prompt\tCategory\tChallenge\tNote\n"HELLO" written in sand\tArts\tWriting & Symbols\t\n'
                    'bond\tAbstract\tBasic\tnote\n', encoding="utf-8")
    frame = read_parti(path)
    assert frame["prompt"].tolist() == ['"HELLO" written in sand', "bond"]


def test_parti128_matches_every_paper_prompt_once():
    frame = read_parti128()
    assert len(frame) == 128
    assert frame["parti_id"].is_unique
    assert "Basic" not in set(frame["challenge"])  # the paper omits the Basic challenge
    giggle = frame[frame["paper_prompt"].str.startswith("G I G G L E")].iloc[0]
    assert giggle["prompt"].startswith('"G I G G L E"')  # the model sees PartiPrompts' text, quotes included
    assert giggle["challenge"] == "Writing & Symbols"
    curly = frame[frame["paper_prompt"].str.contains("\u2019")]
    assert len(curly) > 0 and not curly["prompt"].str.contains("\u2019").any()


def test_match_key_normalises_quotes_and_whitespace():
    assert match_key("a cat\u2019s  \u201chat\u201d ") == match_key("a cat's \"hat\"") == "a cats hat"


def test_parti128_unmatched_line_is_an_error(tmp_path):
    path = tmp_path / "p128.txt"
    path.write_text("a prompt that is not in parti\n", encoding="utf-8")
    with pytest.raises(SuiteDataError, match="match no single PartiPrompts row"):
        read_parti128(path)


# ---------------------------------------------------------------------------------------------------------------
# Shapes and custom prompts


def test_shapes_fixture_keeps_per_prompt_sizes(tmp_path):
    path = tmp_path / "heldout.csv"
    path.write_text("prompt,category,width,height\na red circle,single,96,64\ntwo blue squares,counting,64,96\n")
    frame = read_shapes(path)
    assert frame[["width", "height"]].values.tolist() == [[96, 64], [64, 96]]
    assert frame["category"].tolist() == ["single", "counting"]


def test_shapes_shipped_heldout_set():
    frame = read_shapes()
    assert len(frame) > 0 and (frame["width"] > 0).all() and (frame["height"] > 0).all()
    assert set(frame["category"]) <= {"single", "size", "counting", "two_object"}


def test_shapes_validation_suite_shares_no_prompt_with_the_heldout_set():
    heldout, val = load_suite("shapes"), load_suite("shapes-val")
    assert len(val) == 512 and set(val["category"]) == set(heldout["category"])
    assert not set(val["prompt"]) & set(heldout["prompt"])
    assert suites.is_shapes_suite("shapes-val") and not suites.is_shapes_suite("drawbench")


def test_custom_text_file_skips_blank_lines(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("\ufeffa red circle\n\n  a blue square  \n", encoding="utf-8")
    frame = read_prompts_file(path)
    assert frame["prompt"].tolist() == ["a red circle", "a blue square"]
    assert frame["category"].tolist() == ["", ""]


def test_custom_csv_with_category(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("id,prompt,category\n1,a red circle,easy\n2,\"a cat, a dog\",hard\n")
    frame = read_prompts_file(path)
    assert frame["prompt"].tolist() == ["a red circle", "a cat, a dog"]
    assert frame["category"].tolist() == ["easy", "hard"]


@pytest.mark.parametrize("content, message", [("text,category\nx,y\n", "has no 'prompt' column"),
                                              ("prompt\n", "no prompts in")])
def test_custom_csv_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SuiteDataError, match=message):
        read_prompts_file(path)


def test_custom_prompts_are_read_by_the_shared_reader(tmp_path):
    """bench.run --prompts and ladd.synth --prompts read a file the same way; a bad file is a SuiteDataError."""
    from ladd.prompts import read_prompt_file

    path = tmp_path / "mine.csv"
    path.write_text("prompt,challenge,width\na red circle,Quantity,64\n,,\n", encoding="utf-8")
    frame = read_prompts_file(path)
    assert frame["prompt"].tolist() == read_prompt_file(path)["prompt"].tolist() == ["a red circle"]
    assert frame["challenge"].tolist() == ["Quantity"] and frame["width"].tolist() == [0]  # size: the model's
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(SuiteDataError, match="not UTF-8 text"):
        read_prompts_file(latin1)


def test_load_suite_limit_and_ids_do_not_depend_on_limit():
    full = load_suite("drawbench")
    first = load_suite("drawbench", limit=8)
    assert first["prompt_id"].tolist() == full["prompt_id"].tolist()[:8]
    assert (first["suite"] == "drawbench").all()


def test_unknown_suite_and_custom_without_file():
    with pytest.raises(BenchError, match="unknown suite 'nope'"):
        suites.parse_suites("drawbench,nope")
    with pytest.raises(BenchError, match="needs --prompts"):
        load_suite("custom")


# ---------------------------------------------------------------------------------------------------------------
# PIE-Bench


def test_pie_bench_loader(pie_bench_dir):
    data_dir, _ = pie_bench_dir
    frame = read_pie_bench(data_dir)  # finds the PIE-Bench/ subfolder
    assert frame["prompt_id"].tolist() == ["000000000001", "600000000002"]
    first = frame.iloc[0]
    assert first["source_prompt"] == "a cat sitting on a bench"
    assert first["target_prompt"] == first["prompt"] == "a dog sitting on a bench"
    assert first["instruction"] == "Change the cat to a dog"
    assert frame["category"].tolist() == ["random", "change color"]
    assert frame["editing_type_id"].tolist() == ["0", "6"]
    assert first["source_path"].endswith("annotation_images/0_random_140/000000000001.jpg")


def test_pie_bench_rle_mask_round_trip(pie_bench_dir):
    data_dir, mask = pie_bench_dir
    frame = read_pie_bench(data_dir)
    decoded = decode_rle_mask(json.loads(frame.iloc[0]["edit_mask_rle"]))
    assert decoded.shape == (512, 512) and decoded.sum() == 24
    np.testing.assert_array_equal(decoded, mask)
    second = decode_rle_mask(json.loads(frame.iloc[1]["edit_mask_rle"]))
    assert second[0, :3].all() and second.sum() == 3  # row-major: the first three pixels of the top row


def test_decode_rle_mask_by_hand():
    mask = decode_rle_mask([1, 2, 6, 1], shape=(2, 4))
    assert mask.astype(int).tolist() == [[0, 1, 1, 0], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="odd number"):
        decode_rle_mask([1, 2, 3], shape=(2, 4))


def test_pie_bench_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(SuiteDataError) as error:
        load_suite("pie-bench", data_dir=tmp_path)
    message = str(error.value)
    assert "mapping_file.json" in message and "PnPInversion" in message and "--data-dir" in message
    assert "\n" not in message


def test_pie_bench_missing_image_after_limit(pie_bench_dir):
    data_dir, _ = pie_bench_dir
    (data_dir / "PIE-Bench" / "annotation_images" / "6_change_attribute_color_40" / "600000000002.jpg").unlink()
    assert len(load_suite("pie-bench", data_dir=data_dir, limit=1)) == 1  # the missing image is not needed
    with pytest.raises(SuiteDataError, match="1 pie-bench image"):
        load_suite("pie-bench", data_dir=data_dir)


# ---------------------------------------------------------------------------------------------------------------
# COCO


def test_coco_captions_loader(coco_dir):
    frame = read_coco_captions(coco_dir)
    assert frame["prompt_id"].tolist() == ["000000000042", "000000000139"]  # by image id; uncaptioned skipped
    assert frame["prompt"].tolist() == ["A dog on a couch.", "A room with chairs, a table, and a woman in it."]
    assert frame["source_path"].iloc[0].endswith("val2017/000000000042.jpg")
    assert (frame["category"] == "").all()


def test_coco_missing_data_says_what_to_download(tmp_path):
    with pytest.raises(SuiteDataError) as error:
        load_suite("coco-inpaint", data_dir=tmp_path)
    assert "val2017.zip" in str(error.value) and "annotations_trainval2017.zip" in str(error.value)


def test_coco_missing_images(coco_dir):
    (coco_dir / "val2017" / "000000000139.jpg").unlink()
    assert len(load_suite("coco-inpaint", data_dir=coco_dir, limit=1)) == 1
    with pytest.raises(SuiteDataError, match="1 coco-inpaint image"):
        load_suite("coco-inpaint", data_dir=coco_dir)
