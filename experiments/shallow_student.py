"""Experiment: a shallower (faster) student, the committed one with a block dropped, repaired, then trained on by LADD.

Measured: dropping block 2 of the depth-4 student keeps the most (validation mean 32.0 on 128 prompts, against 67.4);
regressing the depth-3 student onto the deep one's x0 brings it to 42.4 on the 512 validation prompts (82% of the
teacher) after 8,000 iterations, still 5.6 / 1.9 points short of the 1- / 4-step targets, and LADD from there first
costs accuracy. Written up in docs/notebook/ladd-results-diary.md ("A shallower student: the speed lever, not trained
far enough yet"). The recorded results ran at a19791a (the drop scan), 7dd383c (the repair chunks) and 70a255c
(LADD from the repaired student).

    python experiments/shallow_student.py --source models/shapes-turbo --drop 2 --out results/students/drop-2
    python experiments/shallow_student.py --source models/shapes-turbo --drop 2 \
        --out results/students/drop-2-repaired --repair-data results/synth/shapes-sd3-t5 --repair-iterations 2000
    python experiments/shallow_student.py --source models/shapes-turbo --drop 2 \
        --init results/students/drop-2-repaired --out results/students/drop-2-repaired-more \
        --repair-data results/synth/shapes-sd3-t5 --repair-iterations 2000 --seed 1

The paper's scaling study (Sec. 4.4) distils students of several sizes, each initialised from a pretrained model of
that size. Where no model of the wanted depth exists, a student can start from a deeper one with whole blocks
dropped (layer dropping, as BK-SDM and SSD-1B do for U-Nets), and LADD training (`student_from=OUT`) goes on from
it. Which blocks to drop is an empirical question: export a few candidates and rank them on validation prompts
(`python -m bench.select --candidates ...`) before training.

Dropped blocks leave a student that LADD's fresh discriminator heads first pull further down. `--repair-iterations`
first regresses the shallow student onto the deep one it came from (knowledge distillation, BK-SDM's output loss),
where the consistency sampler uses it: on the deep model's own 4-step sampling states, its x0 prediction is the
target. `--init` starts from an earlier output of the same drop instead, to repair it further (a fresh optimiser;
a new `--seed` draws new batches), `--repair-schedule cosine` decays the learning rate to zero over a last
chunk, and `--repair-step-probs 0.7 0.1 0.1 0.1` favours t = 1, the 1-step sampler's only step, as LADD's
timestep schedule does. Neither step is in the paper, whose smaller students are pretrained models of their size.

The last block of an SD3 transformer is "context pre-only" (it has no text-stream output), so it always stays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel
from tqdm import tqdm

from ladd.checkpoint import export_student, load_student
from ladd.conditioning import predict_velocity
from ladd.data import LatentBuckets
from ladd.flow import denoise
from ladd.logs import MetricsLog
from ladd.paths import MODELS_DIR
from ladd.optim import lr_multiplier
from ladd.sampling import consistency_trajectory
from ladd.timesteps import StudentTimesteps

STUDENT_TIMESTEPS = StudentTimesteps().timesteps


def kept_blocks(num_layers: int, drop: list[int]) -> list[int]:
    """Indices of the blocks that stay; a ValueError for a drop list that is not a set of non-final blocks."""
    if len(set(drop)) != len(drop):
        raise ValueError(f"the blocks to drop list a block twice: {drop}")
    outside = [i for i in drop if not 0 <= i < num_layers - 1]
    if outside:
        raise ValueError(f"cannot drop block(s) {outside}: the transformer has blocks 0-{num_layers - 1}, and the "
                         f"last one ({num_layers - 1}, context pre-only) always stays")
    return [i for i in range(num_layers) if i not in drop]


def drop_blocks(transformer: SD3Transformer2DModel, drop: list[int]) -> SD3Transformer2DModel:
    """A copy of `transformer` without the blocks `drop`: the same config at the smaller depth, every kept block's
    weights (renumbered) and every non-block weight (patch and text embedders, norms, projections) unchanged."""
    keep = kept_blocks(transformer.config.num_layers, drop)
    config = dict(transformer.config)
    config["num_layers"] = len(keep)
    # SD3.5's MMDiT-X blocks with a second attention: renumbered with their blocks
    config["dual_attention_layers"] = [keep.index(i) for i in config.get("dual_attention_layers") or () if i in keep]
    shallow = SD3Transformer2DModel.from_config(config)
    state = {}
    for name, tensor in transformer.state_dict().items():
        if name.startswith("transformer_blocks."):
            _, index, rest = name.split(".", 2)
            if int(index) not in keep:
                continue
            name = f"transformer_blocks.{keep.index(int(index))}.{rest}"
        state[name] = tensor
    shallow.load_state_dict(state)
    return shallow.to(transformer.dtype).eval()


def load_shallow_init(init_dir: str | Path, expected: SD3Transformer2DModel) -> SD3Transformer2DModel:
    """The transformer of `init_dir` (an earlier output of this script) to go on from; a ValueError unless its
    architecture is `expected`'s (the same source with the same blocks dropped)."""
    shallow = load_student(init_dir)[0]
    differences = sorted(key for key in {**expected.config, **shallow.config} if not key.startswith("_")
                         and expected.config.get(key) != shallow.config.get(key))
    if differences:
        raise ValueError(f"{init_dir}'s transformer is not the source with these blocks dropped (its "
                         + ", ".join(f"{k} {shallow.config.get(k)} vs {expected.config.get(k)}" for k in differences)
                         + ")")
    return shallow


def repair_loss(shallow, deep, batch: dict, generator: torch.Generator,
                step_probs: tuple[float, ...] | None = None) -> torch.Tensor:
    """Mean squared error between the shallow and the deep model's x0 predictions at the deep model's sampling
    states: one of the 4-step sampler's timesteps per sample (they are every step of the 1-, 2- and 4-step
    samplers), uniformly or with probabilities `step_probs` (e.g. LADD's (0.7, 0.1, 0.1, 0.1), which favours t = 1:
    the 1-step sampler's only step)."""
    text, pooled, image = batch["prompt_embeds"], batch["pooled_prompt_embeds"], batch.get("image_latents")
    noise = torch.randn(batch["latents"].shape, generator=generator, dtype=batch["latents"].dtype)
    states, targets = consistency_trajectory(deep, noise, text, pooled, image_latents=image, generator=generator)
    if step_probs is None:  # uniform, drawn as the recorded repairs drew it, so they replay exactly
        step = torch.randint(len(STUDENT_TIMESTEPS), (len(noise),), generator=generator)
    else:
        step = torch.multinomial(torch.tensor(step_probs), len(noise), replacement=True, generator=generator)
    rows = torch.arange(len(noise))
    x_t, target = states[step, rows], targets[step, rows]
    t = torch.tensor(STUDENT_TIMESTEPS, dtype=x_t.dtype)[step]
    return F.mse_loss(denoise(x_t, t, predict_velocity(shallow, x_t, t, text, pooled, image)), target)


def repair_lr(iteration: int, iterations: int, lr: float, schedule: str = "constant") -> float:
    """The learning rate of `iteration` (0-based) of a repair of `iterations`: constant, or a cosine decay from
    `lr` to zero over the run (for a last chunk: a decayed end settles the weights)."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * lr_multiplier(iteration, warmup=0, total=iterations, final_fraction=0.0)
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (constant or cosine)")


def repair(shallow, deep, data: LatentBuckets, iterations: int, batch_size: int = 64, lr: float = 1e-4,
           seed: int = 0, lr_schedule: str = "constant", step_probs: tuple[float, ...] | None = None) -> list[float]:
    """Train `shallow` (in place) on `repair_loss` for `iterations` AdamW steps on the prompts of `data`
    (`ladd.synth` shards: their text embeddings; the deep model makes its own latents), at `repair_lr`.
    `deep` never changes. Returns the loss of every iteration."""
    # a bad schedule or step distribution fails before any work
    repair_lr(0, iterations, lr, lr_schedule)
    if step_probs is not None:
        StudentTimesteps(STUDENT_TIMESTEPS, probs=tuple(step_probs), switch_at=0)
    deep.eval().requires_grad_(False)
    shallow.train()
    optimizer = torch.optim.AdamW(shallow.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for iteration in (bar := tqdm(range(iterations), desc="repair", mininterval=5)):
        for group in optimizer.param_groups:
            group["lr"] = repair_lr(iteration, iterations, lr, lr_schedule)
        loss = repair_loss(shallow, deep, data.batch(iteration, batch_size, seed), generator, step_probs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(shallow.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    shallow.eval()
    return losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True,
                        help="the deeper transformer: a pipeline folder (teacher or student) or a LADD checkpoint")
    parser.add_argument("--drop", type=int, nargs="+", required=True, help="indices of the blocks to remove (0-based)")
    parser.add_argument("--teacher", default=str(MODELS_DIR / "shapes-sd3"),
                        help="pipeline folder whose VAE, text encoders and sampling sizes the student shares")
    parser.add_argument("--out", required=True, help="pipeline folder to write")
    parser.add_argument("--init", help="start from this earlier output of the same drop (to repair it further) "
                        "instead of the source's kept blocks")
    parser.add_argument("--repair-data", help="`ladd.synth` shards whose prompts the repair regresses on")
    parser.add_argument("--repair-iterations", type=int, default=0,
                        help="iterations of regression onto the source model before export (0: none)")
    parser.add_argument("--repair-lr", type=float, default=1e-4)
    parser.add_argument("--repair-schedule", choices=("constant", "cosine"), default="constant",
                        help="learning rate over the repair: constant, or a cosine decay to zero")
    parser.add_argument("--repair-step-probs", type=float, nargs=len(STUDENT_TIMESTEPS), metavar="P",
                        help=f"how often the repair draws each of the timesteps {STUDENT_TIMESTEPS} (default: "
                        "uniformly), e.g. 0.7 0.1 0.1 0.1 to favour the 1-step sampler")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repair_iterations < 0 or (args.repair_iterations and not args.repair_data):
        print("error: --repair-iterations needs --repair-data (ladd.synth shards) and a count >= 0", file=sys.stderr)
        return 2
    try:
        deep = load_student(args.source)[0]
        shallow = drop_blocks(deep, args.drop)
        if args.init:
            shallow = load_shallow_init(args.init, shallow)
        losses = repair(shallow, deep, LatentBuckets(args.repair_data), args.repair_iterations, args.batch_size,
                        args.repair_lr, args.seed, args.repair_schedule, args.repair_step_probs
                        ) if args.repair_iterations else []
        export_student(args.teacher, shallow, args.out, StudentTimesteps(), link_teacher=True)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if losses:  # beside the weights: how the repair went
        log = MetricsLog(Path(args.out) / "repair_loss.csv")
        for iteration, loss in enumerate(losses):
            log.write(iteration=iteration, loss=loss)
        print(f"repair: loss {sum(losses[:50]) / len(losses[:50]):.4f} over the first 50 iterations, "
              f"{sum(losses[-50:]) / len(losses[-50:]):.4f} over the last 50")
    print(f"{args.out}: {shallow.config.num_layers} blocks "
          f"({sum(p.numel() for p in shallow.parameters()) / 1e6:.2f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
