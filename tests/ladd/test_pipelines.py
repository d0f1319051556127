"""Model names for training and synthetic data: local folders, or hub repo ids already in the local cache."""

import shutil

import huggingface_hub.constants
import pytest

from ladd.pipelines import pipeline_folder


def test_a_local_folder_is_itself(smoke_teacher):
    assert pipeline_folder(smoke_teacher) == smoke_teacher
    with pytest.raises(ValueError, match="no model_index.json"):
        pipeline_folder(smoke_teacher.parent)


def test_a_cached_repo_id_is_its_snapshot_folder_and_an_uncached_one_says_how_to_get_it(smoke_teacher, tmp_path,
                                                                                        monkeypatch):
    # The Hugging Face cache layout: refs/main names the commit whose snapshot folder holds the files.
    repo = tmp_path / "hub" / "models--someone--tiny-sd3"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(smoke_teacher, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    folder = pipeline_folder("someone/tiny-sd3")
    assert folder.name == commit and (folder / "model_index.json").is_file()
    with pytest.raises(ValueError, match="huggingface-cli login") as error:
        pipeline_folder("someone/not-downloaded")
    assert "huggingface-cli download someone/not-downloaded" in str(error.value)
