"""Experiment: the cost of one shapes teacher training step, and CPU speed-ups that might buy the build more steps.

Measured: the prompt table is 1.25x faster than encoding per batch; bf16 autocast (1.06x), `torch.compile` (1.15x)
and a shorter CLIP slot (1.07x) are not worth their cost. Written up in docs/notebook/shapes-world-diary.md ("Build
time"). The recorded results ran at 88aa8e4.

Cost of one teacher training step: prompts encoded per batch vs looked up in a `PromptTable`, and three CPU
speed-ups one might hope would buy the zoo build more steps in its hour (bf16 autocast, `torch.compile`, a CLIP
slot only as long as the grammar's longest prompt).

    python experiments/teacher_step_cost.py [--teacher models/shapes-sd3] [--repeats 15]

The same rectified-flow step as `ladd.shapes.build.train_teacher` (batch 64, 64x64 latents, forward + backward +
AdamW), the variants alternated in one process; prints the median seconds per step of each and its speed-up over
the prompt table in fp32 (what the build uses). The compiled model's first step (compilation) is not timed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.timing import alternating_medians
from ladd.conditioning import encode_prompts
from ladd.losses import diffusion_loss
from ladd.paths import REPO_ROOT
from ladd.pipelines import load_pipeline
from ladd.shapes.build import PromptTable
from ladd.shapes.grammar import sample_scene, scene_to_prompt
from ladd.shapes.zoo import max_sequence_length


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(REPO_ROOT / "models" / "shapes-sd3"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    pipe = load_pipeline(args.teacher)
    transformer = pipe.transformer.train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=1e-6)
    rng = np.random.default_rng(0)
    prompts = [scene_to_prompt(sample_scene(rng)) for _ in range(20 * args.batch_size)]
    table = PromptTable(pipe, prompts)
    compiled = torch.compile(transformer)
    # The CLIP slot pads every prompt to the tokenizer's length; the grammar's longest prompt needs fewer tokens.
    clip_length = pipe.tokenizer.model_max_length
    longest = max(len(ids) for ids in pipe.tokenizer(prompts)["input_ids"])

    def trimmed(batch):
        embeds, pooled = table(batch)
        return torch.cat([embeds[:, :longest], embeds[:, clip_length:]], dim=1), pooled

    variants = {  # name: (prompt encoding, model, bf16 autocast)
        "encode per batch": (lambda batch: encode_prompts(pipe, batch, max_sequence_length(pipe)), transformer, False),
        "prompt table": (table, transformer, False),
        "prompt table, bf16 autocast": (table, transformer, True),
        "prompt table, torch.compile": (table, compiled, False),
        f"prompt table, CLIP slot cut from {clip_length} to {longest} tokens": (trimmed, transformer, False),
    }
    generator = torch.Generator().manual_seed(0)

    def step(encode, model, bf16):
        def run(repeat: int) -> None:
            batch = prompts[(repeat % 20) * args.batch_size:][: args.batch_size]
            embeds, pooled = encode(batch)
            x0 = torch.randn(len(batch), transformer.config.in_channels, 16, 16, generator=generator)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = diffusion_loss(model, x0, embeds, pooled, 0.0, 1.0, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return run

    # the first round warms up (and compiles)
    median = alternating_medians({name: step(*variant) for name, variant in variants.items()}, args.repeats, warmup=1)
    tokens = table(prompts[:1])[0].shape[1]
    print(f"teacher step, batch {args.batch_size}, text tokens {tokens}, torch threads {torch.get_num_threads()}")
    print("| variant | seconds per step | speed-up over the prompt table |")
    print("|---|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds:.4f} | {median['prompt table'] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
