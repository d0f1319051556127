"""Build a blinded 1v1 preference study from run folders (the paper's Appendix A protocol).

    python -m annotate.study create --runs results/MODEL results/BASELINE1 [results/BASELINE2 ...] \\
        --suite parti128 --samples-per-prompt 4 --views 4 --db results/study.db
    python -m annotate.study info   --db results/study.db
    python -m annotate.study export --db results/study.db --out votes.parquet   (or .csv)

The FIRST run is the model under test, every other run is one of its baselines (or name the model with
--model-run). Each baseline is compared with the model on the same prompt and the same seed (the runs' manifests
are joined on suite, prompt_id and sample_index; their seeds must agree). Every prompt is shown --views times per
task per model pair, cycling through the first --samples-per-prompt samples; the side the model appears on is
balanced per prompt and shuffled with --seed, and recorded. Comparisons are dealt into batches of --batch-size;
each annotator gets one batch and answers both questions for each of its pairs.

--db takes a SQLite file path (default) or any SQLAlchemy URL (e.g. postgresql://user@host/db for many
concurrent annotators). Image paths are stored relative to the runs' common parent folder, which is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from annotate import db
from annotate.db import StudyError
from annotate.images import image_problems
from bench.runfolder import Run, read_runs
from ladd.cli import OneLineParser, run_cli

PROG = "python -m annotate.study"

PAIR_KEYS = ["suite", "prompt_id", "sample_index"]
QUESTION_NAMES = {"alignment": "prompt alignment", "quality": "image quality"}


# --- pure planning steps ------------------------------------------------------------------------------------

def pair_images(model: Run, baseline: Run, suite: str, samples_per_prompt: int) -> pd.DataFrame:
    """Rows present in both runs for the same (suite, prompt_id, sample_index), with both image paths."""
    def select(run: Run) -> pd.DataFrame:
        rows = run.manifest[(run.manifest["suite"] == suite) & (run.manifest["sample_index"] < samples_per_prompt)]
        if rows.empty:
            raise StudyError(f"run {run.dir} has no images for suite {suite!r}")
        return rows.assign(abs_path=[str(run.dir / p) for p in rows["path"]])

    left, right = select(model), select(baseline)
    pairs = left.merge(right[PAIR_KEYS + ["seed", "prompt", "abs_path"]], on=PAIR_KEYS, suffixes=("", "_b"))
    if pairs.empty:
        raise StudyError(f"runs {model.dir.name} and {baseline.dir.name} share no (prompt, sample) on {suite!r}")
    bad_seeds = int((pairs["seed"] != pairs["seed_b"]).sum())
    if bad_seeds:
        raise StudyError(f"runs {model.dir.name} and {baseline.dir.name} used different seeds for {bad_seeds} "
                         "images; compare runs made with the same --seed")
    bad_prompts = int((pairs["prompt"] != pairs["prompt_b"]).sum())
    if bad_prompts:
        raise StudyError(f"runs {model.dir.name} and {baseline.dir.name} disagree on the text of {bad_prompts} "
                         "prompt ids")
    return (pairs.rename(columns={"abs_path": "model_path", "abs_path_b": "baseline_path"})
            [PAIR_KEYS + ["prompt", "category", "challenge", "seed", "model_path", "baseline_path"]]
            .sort_values(PAIR_KEYS, ignore_index=True))


def plan_slots(pairs: pd.DataFrame, views: int, rng: np.random.Generator) -> pd.DataFrame:
    """`views` comparisons per prompt: samples cycled in a shuffled order, the model's side balanced per prompt."""
    slots = []
    for _, group in pairs.groupby("prompt_id", sort=True):
        samples = group.sample(frac=1.0, random_state=rng).to_dict("records")
        sides = rng.permutation(np.arange(views) % 2)  # exactly half left when views is even
        for view in range(views):
            slots.append({**samples[view % len(samples)], "view": view,
                          "model_side": db.SIDES[sides[view]]})
    return pd.DataFrame(slots)


def deal_batches(slots: pd.DataFrame, batch_size: int, rng: np.random.Generator) -> pd.DataFrame:
    """Order by view (shuffled within a view), then cut into batches: a batch holds one view of each prompt
    before the next view starts, so an annotator rarely sees the same prompt and pair twice."""
    order = slots.assign(_r=rng.random(len(slots))).sort_values(["view", "_r"]).drop(columns="_r")
    order = order.reset_index(drop=True)
    n_batches = -(-len(order) // batch_size)
    order["batch"] = (order.index * n_batches) // len(order)  # equal sizes (±1), none above batch_size
    order["position"] = order.groupby("batch").cumcount()
    return order


def add_gold(batches: pd.DataFrame, model_images: pd.DataFrame, gold_per_batch: int,
             rng: np.random.Generator) -> pd.DataFrame:
    """Insert `gold_per_batch` attention checks per batch: the model's image for the prompt against the model's
    image for another prompt (another category where possible). The right answer, for prompt alignment, is the
    image made for the prompt."""
    if gold_per_batch <= 0:
        return batches.assign(is_gold=False, gold_side=None)
    out = []
    for batch, items in batches.groupby("batch", sort=True):
        items = items.assign(is_gold=False, gold_side=None).to_dict("records")
        for source in rng.choice(len(items), size=min(gold_per_batch, len(items)), replace=False):
            item = items[source]
            others = model_images[model_images["prompt_id"] != item["prompt_id"]]
            if others.empty:
                break
            away = others[others["category"] != item["category"]]
            decoy = (away if len(away) else others).sample(1, random_state=rng).iloc[0]
            truth = model_images[(model_images["prompt_id"] == item["prompt_id"])
                                 & (model_images["sample_index"] == item["sample_index"])].iloc[0]
            side = db.SIDES[int(rng.integers(2))]
            gold = {**item, "is_gold": True, "gold_side": side, "model_side": None,
                    "left_system": item["model"], "right_system": item["model"],
                    "left_path": truth["path"] if side == "left" else decoy["path"],
                    "right_path": decoy["path"] if side == "left" else truth["path"]}
            # never first, so the annotator has seen an ordinary pair before the first check
            items.insert(int(rng.integers(1, len(items) + 1)), gold)
        for position, item in enumerate(items):
            out.append({**item, "batch": batch, "position": position})
    return pd.DataFrame(out)


def orient(slots: pd.DataFrame) -> pd.DataFrame:
    """Left/right image paths and systems from the model's recorded side."""
    model_left = slots["model_side"] == "left"
    return slots.assign(
        left_path=np.where(model_left, slots["model_path"], slots["baseline_path"]),
        right_path=np.where(model_left, slots["baseline_path"], slots["model_path"]),
        left_system=np.where(model_left, slots["model"], slots["system"]),
        right_system=np.where(model_left, slots["system"], slots["model"]))


# --- the whole build ----------------------------------------------------------------------------------------

def build_plan(model: Run, baselines: list[Run], suite: str, samples_per_prompt: int, views: int,
               batch_size: int, gold_per_batch: int, seed: int) -> pd.DataFrame:
    """Every comparison of the study as one DataFrame (absolute paths; systems by run name)."""
    rng = np.random.default_rng(seed)
    slots = []
    for baseline in baselines:
        pairs = pair_images(model, baseline, suite, samples_per_prompt)
        slots.append(plan_slots(pairs, views, rng).assign(system=baseline.name))
    plan = orient(deal_batches(pd.concat(slots, ignore_index=True).assign(model=model.name), batch_size, rng))
    manifest = model.manifest[model.manifest["suite"] == suite]
    model_images = manifest.assign(path=[str(model.dir / p) for p in manifest["path"]])
    return add_gold(plan, model_images, gold_per_batch, rng)


def verify_images(paths) -> None:
    """Every image a study would show must decode: one StudyError naming the first that does not."""
    problems = image_problems("/", [str(Path(p).resolve()) for p in paths])
    if problems:
        path, problem = problems[0]
        raise StudyError(f"{len(problems)} image(s) of the runs cannot be shown, first {path} ({problem}); rerun "
                         "the bench.run command that made it (it makes damaged or missing images again)")


def create_study(engine: sa.Engine, name: str, model: Run, baselines: list[Run], suite: str,
                 samples_per_prompt: int = 4, views: int = 4, batch_size: int = 40, gold_per_batch: int = 2,
                 seed: int = 0) -> dict:
    """Plan the study, decode every image it shows, and write it — schema included — in one transaction (all or
    nothing, so a kill at any moment leaves the database as it was). Returns a summary; `existed` is True when
    an identical study of that name was already there (a rerun after a kill that came after the commit)."""
    plan = build_plan(model, baselines, suite, samples_per_prompt, views, batch_size, gold_per_batch, seed)
    verify_images(pd.concat([plan["left_path"], plan["right_path"]]))
    runs = [model, *baselines]
    root = Path(os.path.commonpath([str(r.dir) for r in runs]))
    config = {"runs": [str(r.dir) for r in runs], "suite": suite, "samples_per_prompt": samples_per_prompt,
              "views": views, "batch_size": batch_size, "gold_per_batch": gold_per_batch, "seed": seed}
    summary = {"study": name, "comparisons": int((~plan["is_gold"]).sum()), "gold": int(plan["is_gold"].sum()),
               "batches": int(plan["batch"].nunique()), "prompts": int(plan["prompt_id"].nunique()),
               "pairs": len(baselines), "root": str(root)}
    with db.write_transaction(engine) as conn:
        db.metadata.create_all(conn)
        existing = conn.execute(sa.select(db.studies.c.id, db.studies.c.config_json)
                                .where(db.studies.c.name == name)).first()
        if existing:
            if json.loads(existing.config_json) == config:
                return {**summary, "study_id": existing.id, "existed": True}
            raise StudyError(f"a study named {name!r} already exists in this database; pass another --name")
        study_id = conn.execute(db.studies.insert().values(
            name=name, created_at=time.time(), root=str(root), suite=suite,
            config_json=json.dumps(config))).inserted_primary_key[0]
        system_ids = {}
        for run in runs:
            system_ids[run.name] = conn.execute(db.systems.insert().values(
                study_id=study_id, name=run.name, run_dir=str(run.dir),
                role="model" if run is model else "baseline",
                config_json=json.dumps(run.config, default=str))).inserted_primary_key[0]
        rows = [{"study_id": study_id, "batch": int(r["batch"]), "position": int(r["position"]),
                 "prompt_id": r["prompt_id"], "prompt": r["prompt"], "category": r["category"] or "",
                 "challenge": r["challenge"] or "", "sample_index": int(r["sample_index"]),
                 "seed": int(r["seed"]),
                 "left_system_id": system_ids[r["left_system"]], "right_system_id": system_ids[r["right_system"]],
                 "left_path": os.path.relpath(r["left_path"], root),
                 "right_path": os.path.relpath(r["right_path"], root),
                 "is_gold": bool(r["is_gold"]), "gold_side": r["gold_side"]}
                for r in plan.to_dict("records")]
        conn.execute(db.comparisons.insert(), rows)
    return {**summary, "study_id": study_id, "existed": False}


# --- command line -------------------------------------------------------------------------------------------

def _parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="build a study from run folders",
                                 description="Build a study. The first --runs folder is the model under test; "
                                             "the others are its baselines (or pass --model-run).")
    create.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                        help="run folders: MODEL BASELINE [BASELINE ...] (the first is the model under test)")
    create.add_argument("--model-run", help="the model under test; then every --runs folder is a baseline")
    create.add_argument("--suite", help="suite to compare on (default: the only suite the model run has)")
    create.add_argument("--samples-per-prompt", type=int, default=4)
    create.add_argument("--views", type=int, default=4, help="times each prompt is shown per task per model pair")
    create.add_argument("--batch-size", type=int, default=40, help="comparisons per annotator (before gold)")
    create.add_argument("--gold-per-batch", type=int, default=2,
                        help="attention checks per batch (a pair with an image from another prompt); 0 for none")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--name", default="study", help="study name (several studies may share one database)")
    create.add_argument("--db", required=True, help="SQLite file or SQLAlchemy URL")
    info = commands.add_parser("info", help="print a study's size and progress, and any image that went missing")
    info.add_argument("--db", required=True)
    info.add_argument("--study")
    info.add_argument("--root", help="where the images are now, if not at the study's recorded root")
    export = commands.add_parser("export", help="write all votes (with system names) to .csv or .parquet")
    export.add_argument("--db", required=True)
    export.add_argument("--study")
    export.add_argument("--out", required=True)
    return parser


def _create(args) -> int:
    paths = ([args.model_run] if args.model_run else []) + list(args.runs)
    if len(paths) < 2:
        raise StudyError("a study needs the model run and at least one baseline run")
    if len(set(Path(p).resolve() for p in paths)) != len(paths):
        raise StudyError("the same run folder is given twice")
    for value, flag in ((args.samples_per_prompt, "--samples-per-prompt"), (args.views, "--views"),
                        (args.batch_size, "--batch-size")):
        if value < 1:
            raise StudyError(f"{flag} must be at least 1")
    engine = db.make_engine(args.db, must_exist=False)  # an existing file that is not a study: refused, untouched
    model, *baselines = read_runs(paths)
    suite = args.suite or _only_suite(model)
    if "://" not in args.db:
        Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    summary = create_study(engine, args.name, model, baselines, suite, args.samples_per_prompt, args.views,
                           args.batch_size, args.gold_per_batch, args.seed)
    if summary["existed"]:
        print(f"study {summary['study']!r} is already in {args.db} with these settings; nothing to do")
    print(f"study {summary['study']!r}: {summary['comparisons']} comparisons ({summary['prompts']} prompts x "
          f"{args.views} views x {summary['pairs']} model pairs) + {summary['gold']} gold checks in "
          f"{summary['batches']} batches. Recruit {summary['batches']} annotators (one batch each, both "
          f"questions per pair) to show every prompt {args.views} times per task per pair.")
    print(f"model under test: {model.name}; baselines: {', '.join(b.name for b in baselines)}")
    print(f"serve: streamlit run annotate/app.py -- --db {args.db}")
    return 0


def _only_suite(run: Run) -> str:
    suites = sorted(run.manifest["suite"].unique())
    if len(suites) != 1:
        raise StudyError(f"run {run.dir} has suites {', '.join(suites)}; choose one with --suite")
    return suites[0]


def _info(args) -> int:
    engine = db.make_engine(args.db)
    study = db.get_study(engine, args.study)
    table = db.progress(engine, study["id"])
    names = db.study_systems(engine, study["id"])
    root = args.root or study["root"]
    print(f"study {study['name']!r} on suite {study['suite']}, images under {root}")
    print("systems: " + ", ".join(f"{r.name} ({r.role})" for r in names.itertuples()))
    print(table.to_string(index=False))
    counted = " and ".join(f"{int(table[f'{q}_votes'].sum())} on {QUESTION_NAMES[q]}" for q in db.QUESTIONS)
    print(f"votes: {counted}, from {int(table['annotators'].sum())} annotator(s), {int(table['finished'].sum())} "
          f"of whom finished their batch (a finished annotator has one vote per question on each comparison of "
          f"the batch: {int(table['comparisons'].sum())} comparisons in {len(table)} batches); "
          f"'counting' = finished or active in the last {db.DEFAULT_LEASE_SECONDS / 60:g} min")
    comparisons = db.study_comparisons(engine, study["id"])
    problems = image_problems(root, pd.concat([comparisons["left_path"], comparisons["right_path"]]))
    if problems:
        path, problem = problems[0]
        print(f"images: {len(problems)} missing or damaged since the study was created (their items cannot be "
              f"voted on), first {Path(root) / path} ({problem})")
    else:
        print(f"images: all {comparisons[['left_path', 'right_path']].stack().nunique()} decode")
    return 0


def _export(args) -> int:
    engine = db.make_engine(args.db)
    study = db.get_study(engine, args.study)
    frame = db.export_votes(engine, study["id"])
    out = Path(args.out)
    if out.suffix not in (".csv", ".parquet"):
        raise StudyError("--out must end in .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False) if out.suffix == ".parquet" else frame.to_csv(out, index=False)
    print(f"wrote {len(frame)} votes to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with db.database_errors(args.db):  # a locked, corrupted or unreachable database: one line, exit 2
        return {"create": _create, "info": _info, "export": _export}[args.command](args)


if __name__ == "__main__":
    run_cli(main, PROG)
