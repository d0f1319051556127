"""How closely a student's 1-step sample follows the teacher's sample from the same noise, on seen and unseen noise.

    python scripts/paired_error.py STUDENT [STUDENT ...] [--seen results/synth/shapes-sd3-t5]
                                   [--unseen results/synth/shapes-sd3-t5-more] [--num 256]

Teacher-made `ladd.synth` data holds each latent's starting noise, so the student's x0 at t = 1 from that noise can
be compared with the teacher's sample from it (the paired loss's error, `ladd.losses.paired_loss`). `--seen` is the
student's training data, `--unseen` data made from another noise stream (`ladd.synth --seed 1`): a student that
memorised its training pairs would be far closer on the first. STUDENT is a pipeline folder or a training
checkpoint (EMA weights). Prints the mean squared error per latent element on the first `--num` latents of the
first shard of each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import SD3Transformer2DModel

from ladd.checkpoint import load_student
from ladd.conditioning import predict_velocity
from ladd.flow import denoise
from ladd.losses import paired_loss
from ladd.paths import RESULTS_DIR
from ladd.synth import read_shard


@torch.no_grad()
def one_step_error(student: SD3Transformer2DModel, data: Path, num: int) -> float:
    """Mean squared error of the student's x0 at t = 1 from each latent's noise against the latent."""
    tensors, _ = read_shard(sorted(data.glob("shard-*.safetensors"))[0])
    if "noise" not in tensors:
        raise SystemExit(f"error: {data} holds no noise; add it with `python -m ladd.synth --out {data} --add-noise`")
    noise, latents = tensors["noise"][:num], tensors["latents"][:num]
    t = torch.ones(len(noise))
    velocity = predict_velocity(student, noise, t, tensors["prompt_embeds"][:num], tensors["pooled_prompt_embeds"][:num])
    return paired_loss(denoise(noise, t, velocity), latents, torch.ones(len(noise), dtype=torch.bool)).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="+", help="pipeline folders or training checkpoints")
    parser.add_argument("--seen", default=str(RESULTS_DIR / "synth" / "shapes-sd3-t5"))
    parser.add_argument("--unseen", default=str(RESULTS_DIR / "synth" / "shapes-sd3-t5-more"))
    parser.add_argument("--num", type=int, default=256)
    args = parser.parse_args(argv)
    lines = ["| student | seen noise (training pairs) | unseen noise |", "|---|---|---|"]
    for name in args.students:
        student = load_student(name)
        seen, unseen = (one_step_error(student, Path(d), args.num) for d in (args.seen, args.unseen))
        lines.append(f"| {name} | {seen:.3f} | {unseen:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
