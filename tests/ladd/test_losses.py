"""The training objectives of `ladd.losses` that compare the student with a target, by hand."""

import torch

from ladd.flow import denoise
from ladd.losses import distillation_loss


def test_distillation_loss_compares_with_the_teachers_denoising_and_sends_no_gradient_to_it():
    student_x0, noisy = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4)
    t_hat, velocity = torch.tensor([0.3, 0.9]), torch.randn(2, 4, requires_grad=True)
    loss = distillation_loss(student_x0, noisy, t_hat, velocity)
    target = denoise(noisy, t_hat, velocity.detach())
    torch.testing.assert_close(loss, ((student_x0 - target) ** 2).mean())
    loss.backward()
    assert velocity.grad is None and student_x0.grad is not None
