import pytest
import torch

from ladd.discriminator import Discriminator
from ladd.losses import (
    bce_discriminator_loss,
    bce_fake_term,
    bce_generator_loss,
    hinge_discriminator_loss,
    hinge_fake_term,
    hinge_generator_loss,
    mismatch_loss,
    r1_penalty,
)


@pytest.mark.parametrize("h,w", [(8, 8), (8, 12), (12, 8), (5, 3)])
def test_heads_give_one_logit_per_location_on_any_grid(h, w):
    disc = Discriminator(num_heads=3, channels=32, pooled_dim=24, cond_dim=16, hidden=16, cmap_dim=8)
    grids = [torch.randn(2, 32, h, w) for _ in range(3)]
    logits = disc(grids, torch.rand(2), torch.randn(2, 24))
    assert [tuple(l.shape) for l in logits] == [(2, 1, h, w)] * 3


def test_heads_are_independent_and_conditioned():
    torch.manual_seed(0)
    disc = Discriminator(num_heads=2, channels=8, pooled_dim=4, cond_dim=8, hidden=8, cmap_dim=8,
                         use_spectral_norm=False).eval()
    grid = torch.randn(1, 8, 4, 4)
    t, pooled = torch.tensor([0.3]), torch.randn(1, 4)
    a, b = disc([grid, grid], t, pooled)
    assert not torch.allclose(a, b)  # separate parameters
    assert not torch.allclose(disc([grid, grid], torch.tensor([0.9]), pooled)[0], a)  # noise level matters
    assert not torch.allclose(disc([grid, grid], t, torch.randn(1, 4))[0], a)  # text matters
    with pytest.raises(ValueError):
        disc([grid], t, pooled)


def test_hinge_losses_by_hand():
    real = [torch.tensor([2.0, 0.5]), torch.tensor([-1.0])]
    fake = [torch.tensor([-2.0, 0.0]), torch.tensor([1.0])]
    # head 1: relu(1-2)=0, relu(1-.5)=.5 -> .25 ; relu(1-2)=0, relu(1+0)=1 -> .5  => .75
    # head 2: relu(1+1)=2 ; relu(1+1)=2 => 4
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx((0.75 + 4) / 2)
    assert hinge_generator_loss(fake).item() == pytest.approx((1.0 + -1.0) / 2)


def test_bce_losses_by_hand():
    real, fake = [torch.tensor([0.0])], [torch.tensor([0.0])]
    assert bce_discriminator_loss(real, fake).item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item())
    assert bce_generator_loss(fake).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_r1_penalty_is_the_squared_input_gradient():
    x = torch.randn(3, 2, 4, 4).requires_grad_()
    weight = torch.randn(1, 2, 1, 1)
    logits = [(x * weight).sum(1, keepdim=True)]  # d logits.sum / dx = weight everywhere
    expected = (weight.expand(3, 2, 4, 4) ** 2).flatten(1).sum(1).mean()
    assert r1_penalty(logits, [x]).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mismatch_loss_by_hand_skips_pairs_that_borrowed_their_own_text():
    # one head, three samples of 1x2 logit maps; the second sample borrowed its own prompt
    mismatch = [torch.tensor([[[[-2.0, 0.0]]], [[[5.0, 5.0]]], [[[1.0, -0.5]]]])]
    keep = torch.tensor([True, False, True])
    # hinge: relu(1+m) over kept locations: 0, 1, 2, 0.5 -> 3.5 / 4
    assert mismatch_loss(mismatch, keep, hinge_fake_term).item() == pytest.approx(3.5 / 4)
    assert mismatch_loss(mismatch, keep, bce_fake_term).item() == pytest.approx(
        torch.nn.functional.softplus(torch.tensor([-2.0, 0.0, 1.0, -0.5])).mean().item())
    assert mismatch_loss(mismatch, torch.zeros(3, dtype=torch.bool), hinge_fake_term).item() == 0.0
