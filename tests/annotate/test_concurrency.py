"""8 processes voting at once on one SQLite study: 2,000 distinct votes, none lost, none duplicated."""

import multiprocessing as mp
import zlib

from annotate import db
from annotate.study import create_study
from bench.runfolder import fake_prompts, read_runs, write_fake_run

PROCESSES, ANNOTATORS, COMPARISONS_EACH = 8, 4, 250  # 4 annotators x 250 comparisons x 2 questions = 2,000


def choice_for(annotator: str, comparison: int, question: str) -> str:
    return db.SIDES[zlib.crc32(f"{annotator}|{comparison}|{question}".encode()) % 2]


def voter(database: str, study_id: int, worker: int, comparison_ids: list[int], barrier, results) -> None:
    """Two workers share each annotator and submit the same votes in opposite orders, so every vote is
    double-submitted while the other process may be writing the very same row."""
    engine = db.make_engine(database)  # one engine per process, never inherited across fork
    external = f"annotator{worker // 2}"
    annotator = db.register_annotator(engine, study_id, external)
    work = [(c, q) for c in comparison_ids for q in db.QUESTIONS]
    if worker % 2:
        work.reverse()
    barrier.wait()
    new = sum(db.record_vote(engine, annotator["id"], c, q, choice_for(external, c, q)) for c, q in work)
    results.put((worker, new, len(work)))


def test_eight_processes_two_thousand_votes(tmp_path):
    prompts = fake_prompts(32)
    runs = [write_fake_run(tmp_path / name, name, 1, prompts, samples=2, size=8) for name in ("m", "b1", "b2")]
    database = str(tmp_path / "study.db")
    engine = db.make_engine(database, must_exist=False)
    model, *baselines = read_runs(runs)
    create_study(engine, "load", model, baselines, "parti128", 2, 4, batch_size=1000, gold_per_batch=0)
    study = db.get_study(engine)
    comparison_ids = db.study_comparisons(engine, study["id"])["id"].tolist()[:COMPARISONS_EACH]
    assert len(comparison_ids) == COMPARISONS_EACH

    context = mp.get_context("fork")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    workers = [context.Process(target=voter, args=(database, study["id"], w, comparison_ids, barrier, results))
               for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    votes = db.export_votes(engine, study["id"])
    assert sum(attempts for _, _, attempts in outcomes) == 2 * 2000
    assert sum(new for _, new, _ in outcomes) == 2000  # each distinct vote inserted exactly once…
    assert len(votes) == 2000  # …none lost…
    assert not votes.duplicated(["annotator", "comparison", "question"]).any()  # …none duplicated
    assert votes["annotator"].nunique() == ANNOTATORS
    expected = [choice_for(a, c, q) for a, c, q in zip(votes["annotator"], votes["comparison"], votes["question"])]
    assert votes["choice"].tolist() == expected
