"""Model names for training and synthetic data (local folders, or hub repo ids already in the local cache); decoding
in slices; linking the components a derived model shares with its base."""

import shutil

import huggingface_hub.constants
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from ladd.pipelines import decode_in_slices, link_identical_components, load_pipeline, pipeline_folder


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


@pytest.mark.parametrize("vae_class", [AutoencoderKL, AutoencoderTiny])
def test_decoding_in_slices_gives_the_same_images_in_slices_of_at_most_the_size(vae_class):
    torch.manual_seed(0)
    vae = (AutoencoderKL(block_out_channels=(8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4)
           if vae_class is AutoencoderKL else
           AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                           num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4,
                           upsampling_scaling_factor=2)).eval()
    latents = torch.randn(7, 4, 4, 6)
    with torch.no_grad():
        whole = vae.decode(latents).sample
        sizes = []
        vae.decoder.register_forward_pre_hook(  # spy on the decoder: decode is not forward
            lambda module, args: sizes.append(len(args[0])))
        decode_in_slices(vae, slice_size=3)
        sliced = vae.decode(latents)
        (as_tuple,) = vae.decode(latents, return_dict=False)
    assert sizes[:3] == [3, 3, 1]
    torch.testing.assert_close(sliced.sample, whole)
    torch.testing.assert_close(as_tuple, whole)


def test_shared_components_link_to_the_folder_that_holds_the_files(smoke_teacher, tmp_path):
    # base <- derived teacher (links) <- student (links): the student's links must not go through the teacher,
    # whose folder a user may delete or not ship (the zoo commits students without their image-to-image teachers).
    base, teacher, student = tmp_path / "base", tmp_path / "teacher", tmp_path / "student"
    shutil.copytree(smoke_teacher, base)
    shutil.copytree(smoke_teacher, teacher)
    shutil.copytree(smoke_teacher, student)
    assert "vae" in link_identical_components(teacher, base)
    assert "vae" in link_identical_components(student, teacher)
    assert (student / "vae").readlink().parts[-2:] == ("base", "vae")
    shutil.rmtree(teacher)
    assert load_pipeline(student).vae is not None
