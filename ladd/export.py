"""Export a student as a pipeline folder that stock diffusers samples with the paper's consistency sampler:
`python -m ladd.export SOURCE --out DIR [--teacher TEACHER] [--link-teacher] [--weights-dtype float16]`.

SOURCE is a LADD training checkpoint (its EMA student; teacher and timesteps from its record) or a student
pipeline folder (e.g. one exported before the sampler's config was fixed: re-exporting it in place rewrites its
scheduler config and sampling defaults, and leaves its weights as they are).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ladd.checkpoint import CHECKPOINT_FILE, export_student, load_checkpoint_student, load_student
from ladd.cli import LaddError, OneLineParser, run_cli
from ladd.pipelines import pipeline_folder
from ladd.timesteps import StudentTimesteps

PROG = "python -m ladd.export"
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a LADD checkpoint folder or a student pipeline folder")
    parser.add_argument("--out", required=True, help="pipeline folder to write (may be SOURCE itself)")
    parser.add_argument("--teacher", help="the teacher pipeline folder whose VAE and text encoders the student "
                                          "shares (default for a checkpoint: the one it trained with)")
    parser.add_argument("--timesteps", type=float, nargs="+", metavar="T",
                        help="the student's timesteps, for a folder that does not record them (default: its own "
                             "record, else the paper's 1 0.75 0.5 0.25)")
    parser.add_argument("--link-teacher", action="store_true",
                        help="components identical to the teacher's become symlinks to them")
    parser.add_argument("--weights-dtype", choices=sorted(WEIGHTS_DTYPES),
                        help="store the transformer's weights in this dtype (float16 halves a float32 folder; "
                             "stock diffusers loads them as float32 unless told otherwise)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = Path(args.source)
    try:
        if (source / CHECKPOINT_FILE).is_file():
            student, teacher, timesteps = load_checkpoint_student(source)
        else:
            student, timesteps = load_student(source)
            if not args.teacher:
                raise LaddError("--teacher is required for a pipeline folder (the teacher it was distilled from)")
            teacher = None
        teacher = pipeline_folder(args.teacher) if args.teacher else teacher
        if args.timesteps:
            timesteps = StudentTimesteps.for_sampling(args.timesteps)
    except ValueError as error:
        raise LaddError(str(error)) from None
    out, linked = export_student(teacher, student, args.out, timesteps or StudentTimesteps(), args.link_teacher,
                                 WEIGHTS_DTYPES.get(args.weights_dtype))
    table = (timesteps or StudentTimesteps()).sigma_table()
    print(f"{out}: consistency sampler at {', '.join(f'{k} step(s) {v}' for k, v in table.items())}"
          + (f"; linked to the teacher's: {', '.join(linked)}" if linked else ""))
    return 0


if __name__ == "__main__":
    run_cli(main, PROG)
