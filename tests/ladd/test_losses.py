"""The training objectives of `ladd.losses` that compare the student with a target, by hand."""

import torch

from ladd.flow import denoise
from ladd.losses import distillation_loss, paired_loss


def test_paired_loss_is_the_mse_over_the_samples_at_full_noise():
    student = torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.0, 2.0]])
    teacher = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    at_full_noise = torch.tensor([True, False, True])
    assert paired_loss(student, teacher, at_full_noise).item() == (1 + 1 + 0 + 4) / 4


def test_paired_loss_without_a_sample_at_full_noise_is_zero_and_keeps_the_graph():
    student = torch.randn(3, 2, requires_grad=True)
    loss = paired_loss(student, torch.randn(3, 2), torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0 and torch.equal(student.grad, torch.zeros(3, 2))


def test_distillation_loss_compares_with_the_teachers_denoising_and_sends_no_gradient_to_it():
    student_x0, noisy = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4)
    t_hat, velocity = torch.tensor([0.3, 0.9]), torch.randn(2, 4, requires_grad=True)
    loss = distillation_loss(student_x0, noisy, t_hat, velocity)
    target = denoise(noisy, t_hat, velocity.detach())
    torch.testing.assert_close(loss, ((student_x0 - target) ** 2).mean())
    loss.backward()
    assert velocity.grad is None and student_x0.grad is not None
