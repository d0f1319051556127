"""Many processes on one study database, on SQLite and on a real PostgreSQL server.

- The hammer: 8 writer processes × 2,000 vote attempts (two per annotator, submitting the same votes in opposite
  orders, so every vote is double-submitted while the other process may be writing the very same row) plus
  reader processes exporting and counting all the while: 8,000 distinct votes, none lost, none duplicated, no
  error anywhere, and no reader ever sees the count go down.
- Arrivals at the same instant: 16 registrations over 8 batches give every batch exactly 2 annotators.
- The lease: a batch taken by someone who never votes is handed out again once the lease runs out.
"""

import multiprocessing as mp
import time
import zlib
from collections import Counter

from annotate import db
from annotate.study import create_study
from bench.runfolder import fake_prompts, read_runs, write_fake_run

WRITERS, ANNOTATORS, COMPARISONS_EACH = 8, 4, 1000  # 4 annotators x 1,000 comparisons x 2 questions = 8,000 votes
READERS = 2
CONTEXT = mp.get_context("fork")


def choice_for(annotator: str, comparison: int, question: str) -> str:
    return db.SIDES[zlib.crc32(f"{annotator}|{comparison}|{question}".encode()) % 2]


def make_study(tmp_path, database: str, prompts: int, views: int, batch_size: int) -> dict:
    """Two model pairs over `prompts` fake prompts (2 samples each, 8 px images)."""
    names = ("m", "b1", "b2")
    runs = [write_fake_run(tmp_path / "runs" / n, n, 1, fake_prompts(prompts), samples=2, size=8) for n in names]
    engine = db.make_engine(database, must_exist=False)
    model, *baselines = read_runs(runs)
    create_study(engine, "load", model, baselines, "parti128", 2, views, batch_size=batch_size, gold_per_batch=0)
    study = db.get_study(engine)
    engine.dispose()  # no connection is inherited across fork
    return study


def writer(database: str, study_id: int, worker: int, comparison_ids: list[int], barrier, results) -> None:
    errors, new = 0, 0
    engine = db.make_engine(database)  # one engine per process
    external = f"annotator{worker // 2}"
    annotator = db.register_annotator(engine, study_id, external)
    work = [(c, q) for c in comparison_ids for q in db.QUESTIONS]
    if worker % 2:
        work.reverse()
    barrier.wait()
    for comparison, question in work:
        try:
            new += db.record_vote(engine, annotator["id"], comparison, question,
                                  choice_for(external, comparison, question))
        except Exception:  # counted, and the test demands none
            errors += 1
    results.put(("writer", worker, new, len(work), errors))


def reader(database: str, study_id: int, barrier, done, results) -> None:
    """Exports every vote and the progress table in a loop while the writers write."""
    engine = db.make_engine(database)
    reads = errors = went_down = 0
    last = 0
    barrier.wait()
    while not done.is_set():
        try:
            count = len(db.export_votes(engine, study_id))
            table = db.progress(engine, study_id)
            reads += 1
            went_down += count < last
            last = count
            assert int(table[[f"{q}_votes" for q in db.QUESTIONS]].to_numpy().sum()) >= count
        except Exception:
            errors += 1
    results.put(("reader", reads, errors, went_down))


def test_the_hammer_loses_and_doubles_nothing(tmp_path, database):
    study = make_study(tmp_path, database, prompts=128, views=4, batch_size=2000)  # 1,024 comparisons, 1 batch
    engine = db.make_engine(database)
    comparison_ids = db.study_comparisons(engine, study["id"])["id"].tolist()[:COMPARISONS_EACH]
    assert len(comparison_ids) == COMPARISONS_EACH
    engine.dispose()

    barrier, results, done = CONTEXT.Barrier(WRITERS + READERS), CONTEXT.Queue(), CONTEXT.Event()
    writers = [CONTEXT.Process(target=writer, args=(database, study["id"], w, comparison_ids, barrier, results))
               for w in range(WRITERS)]
    readers = [CONTEXT.Process(target=reader, args=(database, study["id"], barrier, done, results))
               for _ in range(READERS)]
    started = time.monotonic()
    for process in writers + readers:
        process.start()
    outcomes = [results.get(timeout=600) for _ in writers]
    seconds = time.monotonic() - started
    done.set()
    outcomes += [results.get(timeout=120) for _ in readers]
    for process in writers + readers:
        process.join(timeout=60)
        assert process.exitcode == 0

    written = [o for o in outcomes if o[0] == "writer"]
    read = [o for o in outcomes if o[0] == "reader"]
    engine = db.make_engine(database)
    votes = db.export_votes(engine, study["id"])
    attempts = sum(o[3] for o in written)
    print(f"\nhammer on {engine.dialect.name}: {attempts} vote attempts by {WRITERS} processes in {seconds:.1f} s, "
          f"{sum(o[2] for o in written)} new, {len(votes)} stored, "
          f"{int(votes.duplicated(['annotator', 'comparison', 'question']).sum())} duplicated, "
          f"{sum(o[4] for o in written)} writer errors; {sum(o[1] for o in read)} concurrent exports by {READERS} "
          f"readers, {sum(o[2] for o in read)} reader errors")
    assert attempts == WRITERS * 2 * COMPARISONS_EACH
    assert sum(o[4] for o in written) == 0 and sum(o[2] for o in read) == 0  # no error anywhere
    assert sum(o[2] for o in written) == ANNOTATORS * 2 * COMPARISONS_EACH  # each vote inserted exactly once…
    assert len(votes) == ANNOTATORS * 2 * COMPARISONS_EACH  # …none lost…
    assert not votes.duplicated(["annotator", "comparison", "question"]).any()  # …none duplicated
    expected = [choice_for(a, c, q) for a, c, q in zip(votes["annotator"], votes["comparison"], votes["question"])]
    assert votes["choice"].tolist() == expected
    assert all(o[1] > 0 for o in read) and sum(o[3] for o in read) == 0  # readers read, counts never went down


def registrant(database: str, study_id: int, k: int, barrier, results) -> None:
    engine = db.make_engine(database)
    barrier.wait()  # every registration at the same instant
    results.put(db.register_annotator(engine, study_id, f"arrival{k:02d}")["batch"])


def test_simultaneous_arrivals_are_dealt_different_batches(tmp_path, database):
    study = make_study(tmp_path, database, prompts=8, views=2, batch_size=4)  # 32 comparisons in 8 batches
    arrivals = 16
    barrier, results = CONTEXT.Barrier(arrivals), CONTEXT.Queue()
    processes = [CONTEXT.Process(target=registrant, args=(database, study["id"], k, barrier, results))
                 for k in range(arrivals)]
    for process in processes:
        process.start()
    batches = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert Counter(batches) == {batch: 2 for batch in range(8)}


def test_a_batch_held_without_votes_is_handed_out_again_after_the_lease(tmp_path, database):
    study = make_study(tmp_path, database, prompts=4, views=1, batch_size=4)  # 8 comparisons in 2 batches
    engine = db.make_engine(database)
    lease, t0 = 30 * 60, 1_000_000.0
    idle = db.register_annotator(engine, study["id"], "idle", now=t0, lease_seconds=lease)
    busy = db.register_annotator(engine, study["id"], "busy", now=t0, lease_seconds=lease)
    assert {idle["batch"], busy["batch"]} == {0, 1}
    items = db.batch_items(engine, study["id"], busy["batch"])
    db.record_vote(engine, busy["id"], int(items["id"].iloc[0]), "alignment", "left", now=t0 + 40 * 60)
    # 45 min later: "idle" never voted and no longer holds a batch; "busy" voted 5 min ago and does.
    later = db.register_annotator(engine, study["id"], "later", now=t0 + 45 * 60, lease_seconds=lease)
    assert later["batch"] == idle["batch"]
    table = db.progress(engine, study["id"], now=t0 + 45 * 60, lease_seconds=lease).set_index("batch")
    assert table.loc[idle["batch"], ["annotators", "counting"]].tolist() == [2, 1]
    # Someone who finished their batch holds it for good, lease or not.
    for item in items["id"]:
        for question in db.QUESTIONS:
            db.record_vote(engine, busy["id"], int(item), question, "left", now=t0 + 41 * 60)
    ages_later = t0 + 24 * 3600
    assert db.progress(engine, study["id"], now=ages_later, lease_seconds=lease).set_index("batch").loc[
        busy["batch"], ["counting", "finished"]].tolist() == [1, 1]
    again = db.register_annotator(engine, study["id"], "next-day", now=ages_later, lease_seconds=lease)
    assert again["batch"] == idle["batch"]  # the finished batch is covered; the other is not
