"""A shallower student, initialised from a deeper transformer with some of its blocks removed.

    python -m ladd.shallow --source models/shapes-turbo --drop 2 --out results/students/drop-2

The paper's scaling study (Sec. 4.4) distils students of several sizes, each initialised from a pretrained model of
that size. Where no model of the wanted depth exists, a student can start from a deeper one with whole blocks
dropped (layer dropping, as BK-SDM and SSD-1B do for U-Nets), and LADD training (`student_from=OUT`) repairs it.
Which blocks to drop is an empirical question: export a few candidates and rank them on validation prompts
(`scripts/ladd_select.py --candidates ...`) before training.

The last block of an SD3 transformer is "context pre-only" (it has no text-stream output), so it always stays.
"""

from __future__ import annotations

import argparse
import sys

from diffusers import SD3Transformer2DModel

from ladd.checkpoint import export_student, load_student
from ladd.paths import MODELS_DIR


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True,
                        help="the deeper transformer: a pipeline folder (teacher or student) or a LADD checkpoint")
    parser.add_argument("--drop", type=int, nargs="+", required=True, help="indices of the blocks to remove (0-based)")
    parser.add_argument("--teacher", default=str(MODELS_DIR / "shapes-sd3"),
                        help="pipeline folder whose VAE, text encoders and sampling sizes the student shares")
    parser.add_argument("--out", required=True, help="pipeline folder to write")
    args = parser.parse_args(argv)
    try:
        shallow = drop_blocks(load_student(args.source), args.drop)
        export_student(args.teacher, shallow, args.out, link_teacher=True)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {shallow.config.num_layers} blocks "
          f"({sum(p.numel() for p in shallow.parameters()) / 1e6:.2f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
