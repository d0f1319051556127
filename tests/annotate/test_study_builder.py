"""Study builder: pairing, balance, gold checks, batches, the one-study rule and its error paths."""

import json
from pathlib import Path

import pandas as pd
import pytest

from annotate import db, study
from annotate.db import StudyError
from bench.runfolder import fake_prompts, write_fake_run


def load(path):
    engine = db.make_engine(str(path))
    info = db.get_study(engine)
    return engine, info, db.study_comparisons(engine, info["id"]), db.study_systems(engine, info["id"])


def test_cli_creates_balanced_blinded_pairs(tmp_path, run_dirs, capsys):
    path = tmp_path / "cli.db"
    code = study.main(["create", "--runs", *map(str, run_dirs), "--suite", "parti128", "--samples-per-prompt", "2",
                       "--views", "4", "--batch-size", "10", "--gold-per-batch", "1", "--db", str(path)])
    assert code == 0
    assert "Recruit" in capsys.readouterr().out
    engine, info, comparisons, systems = load(path)
    model_id = int(systems.loc[systems["role"] == "model", "id"].iloc[0])
    assert systems.set_index("role").loc["model", "name"] == "shapes-turbo-1step"  # first run = model under test
    real = comparisons[~comparisons["is_gold"]]
    assert len(real) == 8 * 4 * 2  # prompts x views x baselines
    # every comparison pits the model against one baseline, and each (pair, prompt) is shown exactly `views` times
    has_model = (real["left_system_id"] == model_id) ^ (real["right_system_id"] == model_id)
    assert has_model.all()
    baseline = real["left_system_id"].where(real["right_system_id"] == model_id, real["right_system_id"])
    per_prompt = real.assign(baseline=baseline).groupby(["baseline", "prompt_id"])
    assert (per_prompt.size() == 4).all()
    # the model's side is balanced per prompt (views even) and the samples cycle through both seeds
    assert (per_prompt.apply(lambda g: (g["left_system_id"] == model_id).sum()) == 2).all()
    assert (per_prompt["sample_index"].nunique() == 2).all()
    # both images of a pair are the same prompt and sample: same file name in two run folders, which exist
    root = Path(info["root"])
    for row in real.itertuples():
        assert Path(row.left_path).name == Path(row.right_path).name == f"{row.prompt_id}_{row.sample_index}.png"
        assert (root / row.left_path).is_file() and (root / row.right_path).is_file()
        assert not Path(row.left_path).is_absolute()
    # batches: none above the requested size (+ gold), sizes within one of each other
    sizes = real.groupby("batch").size()
    assert sizes.max() <= 10 and sizes.max() - sizes.min() <= 1
    assert (comparisons[comparisons["is_gold"]].groupby("batch").size() == 1).all()


def test_gold_pairs_the_prompts_own_image_with_another_prompts(study_db):
    _, info, comparisons, _ = load(study_db)
    gold = comparisons[comparisons["is_gold"]]
    assert len(gold) == comparisons["batch"].nunique()
    for row in gold.itertuples():
        right_image = row.left_path if row.gold_side == "left" else row.right_path
        wrong_image = row.right_path if row.gold_side == "left" else row.left_path
        assert Path(right_image).name.startswith(row.prompt_id + "_")
        assert not Path(wrong_image).name.startswith(row.prompt_id + "_")
        assert row.position > 0


def test_left_right_randomisation_is_seeded(tmp_path, run_dirs):
    def sides(seed, name):
        path = tmp_path / f"{name}.db"
        study.main(["create", "--runs", *map(str, run_dirs[:2]), "--samples-per-prompt", "2", "--views", "2",
                    "--seed", str(seed), "--db", str(path)])
        return load(path)[2][["prompt_id", "left_path", "batch", "position"]].reset_index(drop=True)

    pd.testing.assert_frame_equal(sides(1, "a"), sides(1, "b"))
    assert not sides(1, "c").equals(sides(2, "d"))


def test_help_says_the_first_run_is_the_model(capsys):
    with pytest.raises(SystemExit):
        study.main(["create", "--help"])
    assert "first" in capsys.readouterr().out.lower()


def test_model_run_flag(tmp_path, run_dirs):
    path = tmp_path / "flag.db"
    assert study.main(["create", "--model-run", str(run_dirs[1]), "--runs", str(run_dirs[0]),
                       "--samples-per-prompt", "2", "--db", str(path)]) == 0
    systems = load(path)[3]
    assert systems.set_index("role").loc["model", "name"] == "shapes-sd3-50step"


@pytest.mark.parametrize("problem", ["missing_run", "different_seeds", "one_run", "duplicate_name", "no_suite"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, run_dirs, capsys, cli, problem):
    path = tmp_path / "bad.db"
    runs = list(map(str, run_dirs[:2]))
    args = ["create", "--samples-per-prompt", "2", "--db", str(path)]
    if problem == "missing_run":
        runs.append(str(tmp_path / "nope"))
    elif problem == "different_seeds":
        manifest = pd.read_parquet(run_dirs[1] / "manifest.parquet")
        manifest.assign(seed=manifest["seed"] + 1).to_parquet(run_dirs[1] / "manifest.parquet")
    elif problem == "one_run":
        runs = runs[:1]
    elif problem == "duplicate_name":
        assert study.main(args + ["--runs", *runs]) == 0
        before = load(path)[2]
        capsys.readouterr()
        args += ["--seed", "1"]  # the same name with other settings (the same settings again: nothing to do)
    elif problem == "no_suite":
        args += ["--suite", "drawbench"]
    code, _, err = cli(study, *args, "--runs", *runs)
    err = err.strip()
    assert code == 2 and err.startswith(f"{study.PROG}: error: ") and "\n" not in err
    if problem == "duplicate_name":  # nothing already written is lost or doubled
        pd.testing.assert_frame_equal(load(path)[2], before)
    elif problem != "duplicate_name":
        assert not path.exists() or db.study_comparisons(db.make_engine(str(path)), 1).empty


def test_info_and_export_need_an_existing_db(tmp_path, cli):
    missing = tmp_path / "missing.db"
    code, _, err = cli(study, "info", "--db", missing)
    assert code == 2 and "not found" in err
    assert not missing.exists()  # a typo must not create an empty database


def test_export_writes_votes_with_names(tmp_path, study_db):
    engine, info, comparisons, _ = load(study_db)
    annotator = db.register_annotator(engine, info["id"], "p1")
    db.record_vote(engine, annotator["id"], int(comparisons["id"].iloc[0]), "alignment", "left")
    out = tmp_path / "votes.parquet"
    assert study.main(["export", "--db", str(study_db), "--out", str(out)]) == 0
    votes = pd.read_parquet(out)
    assert len(votes) == 1 and {"left_system", "right_system", "prompt_id"} <= set(votes.columns)


def test_annotators_fill_batches_evenly_and_take_part_in_one_study_only(tmp_path, run_dirs):
    path = tmp_path / "two.db"
    engine = db.make_engine(str(path), must_exist=False)
    model, *baselines = study.read_runs(run_dirs[:2])
    study.create_study(engine, "first", model, baselines, "parti128", 2, 2, 4, 0)
    study.create_study(engine, "second", model, baselines, "parti128", 2, 2, 4, 0, seed=1)
    first, second = db.get_study(engine, "first"), db.get_study(engine, "second")
    n_batches = db.study_comparisons(engine, first["id"])["batch"].nunique()
    batches = [db.register_annotator(engine, first["id"], f"a{i}")["batch"] for i in range(2 * n_batches)]
    assert sorted(batches) == sorted(list(range(n_batches)) * 2)
    again = db.register_annotator(engine, first["id"], "a0")  # returning annotator keeps the batch
    assert again["batch"] == batches[0]
    with pytest.raises(StudyError, match="another study"):
        db.register_annotator(engine, second["id"], "a0")
    with pytest.raises(StudyError):
        db.register_annotator(engine, first["id"], "bad id with spaces")
    with pytest.raises(StudyError, match="several studies"):
        db.get_study(engine)


def test_vote_is_unique_per_annotator_comparison_question(study_db):
    engine, info, comparisons, _ = load(study_db)
    annotator = db.register_annotator(engine, info["id"], "p1")
    cid = int(comparisons["id"].iloc[0])
    assert db.record_vote(engine, annotator["id"], cid, "alignment", "left") is True
    assert db.record_vote(engine, annotator["id"], cid, "alignment", "right") is False  # first answer stands
    assert db.record_vote(engine, annotator["id"], cid, "quality", "right") is True
    votes = db.export_votes(engine, info["id"])
    assert votes[["question", "choice"]].values.tolist() == [["alignment", "left"], ["quality", "right"]]


def test_sqlite_runs_in_wal_mode(study_db):
    engine = db.make_engine(str(study_db))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_run_name_from_config_or_folder(tmp_path):
    prompts = fake_prompts(2)
    run = write_fake_run(tmp_path / "x", "/models/my-pipe", 4, prompts, samples=1, size=8)
    assert study.read_runs([run])[0].name == "my-pipe-4step"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "model": None, "steps": None}))
    manifest = pd.read_parquet(run / "manifest.parquet")
    manifest.assign(model="").to_parquet(run / "manifest.parquet")
    assert study.read_runs([run])[0].name == "x"


def test_bad_arguments_are_one_line_and_exit_2(tmp_path, cli):
    code, _, err = cli(study, "create", "--runs", "a", "b", "--views", "many", "--db", tmp_path / "x.db")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"{study.PROG}: error: argument --views: invalid int value: 'many'")
    assert not (tmp_path / "x.db").exists()
