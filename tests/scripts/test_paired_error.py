"""scripts/paired_error.py on the smoke zoo: a student that is the teacher's sampler in one step scores zero."""

import pytest
import torch

from paired_error import main, one_step_error


def test_the_error_is_zero_for_a_perfect_one_step_student_and_positive_for_the_teacher(
        smoke_teacher, smoke_latents, capsys):
    from diffusers import SD3Transformer2DModel

    teacher = SD3Transformer2DModel.from_pretrained(smoke_teacher / "transformer").eval()
    assert one_step_error(teacher, smoke_latents, num=4) > 0  # one Euler step is not the 2-step CFG sampler

    class Oracle(torch.nn.Module):  # returns the velocity whose one step lands on the stored latent
        def __init__(self, latents):
            super().__init__()
            self.latents, self.config = latents, teacher.config

        def forward(self, hidden_states, **kwargs):
            return (hidden_states - self.latents,)

    from ladd.synth import read_shard
    latents = read_shard(sorted(smoke_latents.glob("shard-*.safetensors"))[0])[0]["latents"][:4]
    assert one_step_error(Oracle(latents), smoke_latents, num=4) == pytest.approx(0, abs=1e-10)
    main([str(smoke_teacher), "--seen", str(smoke_latents), "--unseen", str(smoke_latents), "--num", "4"])
    row = capsys.readouterr().out.splitlines()[-1]
    seen, unseen = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
    assert seen == unseen > 0
