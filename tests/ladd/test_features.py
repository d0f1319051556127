import pytest
import torch

from ladd.features import TeacherFeatures, tokens_to_grid
from ladd.shapes.zoo import make_transformer


def tiny_transformer(depth=3, seed=0):
    torch.manual_seed(seed)
    return make_transformer(
        dict(depth=depth, heads=2, head_dim=8, patch_size=2, sample_size=8, pos_embed_max_size=16), 4, 16, 16
    ).eval()


def run(transformer, latents, grad=False):
    n = len(latents)
    g = torch.Generator().manual_seed(1)
    with torch.set_grad_enabled(grad):
        return transformer(
            hidden_states=latents,
            encoder_hidden_states=torch.randn(n, 5, 32, generator=g),
            pooled_projections=torch.randn(n, 32, generator=g),
            timestep=torch.full((n,), 500.0),
            return_dict=False,
        )[0]


@pytest.mark.parametrize("height,width", [(16, 16), (16, 24), (24, 16)])
def test_grids_have_the_latent_layout_for_every_aspect(height, width):
    transformer = tiny_transformer()
    features = TeacherFeatures(transformer)
    with features.capture():
        run(transformer, torch.randn(2, 4, height, width))
    grids = features.grids(height, width)
    assert len(grids) == 3
    assert all(g.shape == (2, 16, height // 2, width // 2) for g in grids)


@pytest.mark.parametrize("height,width", [(16, 24), (24, 16)])
def test_tokens_to_grid_inverts_the_patch_embedding(height, width):
    """PatchEmbed = conv (B, C, h, w) -> flattened tokens + positions; the grid must put every token back."""
    transformer = tiny_transformer()
    latents = torch.randn(2, 4, height, width)
    with torch.no_grad():
        conv = transformer.pos_embed.proj(latents)
        tokens = transformer.pos_embed(latents)
        positions = transformer.pos_embed.cropped_pos_embed(height, width)
    h, w = height // 2, width // 2
    assert torch.allclose(tokens_to_grid(tokens - positions, h, w), conv, atol=1e-5)
    with pytest.raises(ValueError):
        tokens_to_grid(tokens, w + 1, h)


def test_block_selection_and_missing_capture():
    transformer = tiny_transformer(depth=4)
    features = TeacherFeatures(transformer, blocks=[0, -1])
    assert features.blocks == [0, 3]
    run(transformer, torch.randn(1, 4, 16, 16))  # outside capture(): nothing recorded
    with pytest.raises(RuntimeError, match="capture"):
        features.grids(16, 16)


def test_features_and_gradients_are_the_same_under_gradient_checkpointing():
    results = []
    for checkpointing in (False, True):
        transformer = tiny_transformer(depth=3).requires_grad_(False)
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        features = TeacherFeatures(transformer)
        latents = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(3)).requires_grad_()
        with features.capture():
            run(transformer, latents, grad=True)
        grids = features.grids(16, 24)
        loss = sum((g * torch.linspace(-1, 1, g.numel()).reshape(g.shape)).sum() for g in grids)
        loss.backward()  # with checkpointing, every block runs again here and its hook fires again
        assert features._store == {}  # ...but records nothing outside capture()
        results.append(([g.detach() for g in grids], latents.grad.clone()))
    (plain, plain_grad), (ckpt, ckpt_grad) = results
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, ckpt))
    assert torch.allclose(plain_grad, ckpt_grad, atol=1e-5)
    assert plain_grad.abs().sum() > 0
