"""Study database: schema, engine and the few queries the app, the simulator and the report share.

Any SQLAlchemy URL works; a plain path means a SQLite file. The browser-facing queries (`next_item`,
`progress`) read only comparison ids, prompts and image paths — never the `systems` table, which is the only
place model names live.

Opening is careful: an existing SQLite file is first read through a read-only connection (its header, its tables,
`PRAGMA quick_check`), and only a study database (or an empty file, for `create`) is then opened for writing and
switched to WAL, so a file that is rejected is never changed. Database failures reach people as one
`DatabaseProblem` naming the database and what is wrong (missing, not a study database, corrupted, locked,
unreachable), never as SQLAlchemy tracebacks (`database_errors`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError

from ladd.cli import UserError

QUESTIONS = ("alignment", "quality")
QUESTION_TEXT = {
    "alignment": "Which image looks more representative of the text shown above and faithfully follows it?",
    "quality": "Given the prompt above, which image is of higher quality and aesthetically more pleasing?",
}
SIDES = ("left", "right")
ANNOTATOR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

metadata = sa.MetaData()

studies = sa.Table(
    "studies", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("root", sa.Text, nullable=False),  # image paths below are relative to this folder
    sa.Column("suite", sa.String(64), nullable=False),
    sa.Column("config_json", sa.Text, nullable=False),
)

systems = sa.Table(
    "systems", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # "model" (the one under test) or "baseline"
    sa.Column("config_json", sa.Text, nullable=False),
    sa.UniqueConstraint("study_id", "name"),
)

comparisons = sa.Table(
    "comparisons", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # order within the batch
    sa.Column("prompt_id", sa.String(200), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("category", sa.String(200), nullable=False, default=""),
    sa.Column("challenge", sa.String(200), nullable=False, default=""),
    sa.Column("sample_index", sa.Integer, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("left_system_id", sa.Integer, sa.ForeignKey("systems.id"), nullable=False),
    sa.Column("right_system_id", sa.Integer, sa.ForeignKey("systems.id"), nullable=False),
    sa.Column("left_path", sa.Text, nullable=False),
    sa.Column("right_path", sa.Text, nullable=False),
    sa.Column("is_gold", sa.Boolean, nullable=False, default=False),
    sa.Column("gold_side", sa.String(8), nullable=True),  # side of the image that matches the prompt
    sa.UniqueConstraint("study_id", "batch", "position"),
)

annotators = sa.Table(
    "annotators", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # Unique across the whole database, not per study: the paper's rule that an evaluator takes part in one
    # study only. Keep several studies in one database to have it enforced across them.
    sa.Column("external_id", sa.String(64), nullable=False, unique=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

votes = sa.Table(
    "votes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False),
    sa.Column("comparison_id", sa.Integer, sa.ForeignKey("comparisons.id"), nullable=False),
    sa.Column("question", sa.String(16), nullable=False),
    sa.Column("choice", sa.String(8), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # One vote per (annotator, comparison, question): a double click or a second tab cannot add another.
    sa.UniqueConstraint("annotator_id", "comparison_id", "question", name="one_vote"),
)


class StudyError(UserError):
    """A user-facing problem (missing database, unknown study, …): `ladd.cli.run_cli` prints one line, exit code 2."""


class DatabaseProblem(StudyError):
    """The database cannot be used as it is. The message names it (for the operator); `reason` is a few words
    without paths or SQL, which is all the app shows to annotators."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# An annotator with no vote for this long stops counting towards their batch's coverage (unless finished).
DEFAULT_LEASE_SECONDS = 30 * 60
# quick_check reads the whole file: cheap for a study database (MBs), skipped above this size.
QUICK_CHECK_MAX_BYTES = 1 << 30
SQLITE_MAGIC = b"SQLite format 3\x00"
NOT_A_STUDY = "the file given is not a study database"


def default_timeout() -> float:
    """Seconds a write waits for SQLite's lock before giving up: ANNOTATE_DB_TIMEOUT, else 30."""
    return float(os.environ.get("ANNOTATE_DB_TIMEOUT", "30"))


def database_url(db: str) -> str:
    """A SQLAlchemy URL from either a URL or a plain SQLite file path."""
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def database_label(db: str) -> str:
    """How messages name the database: the SQLite file's path, or the URL without its password."""
    url = sa.engine.make_url(database_url(db))
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def _sqlite_problem(label: str, message: str, timeout: float) -> DatabaseProblem:
    """A DatabaseProblem from a SQLite error message."""
    text = " ".join(message.split())
    if "locked" in text or "busy" in text:
        return DatabaseProblem(f"{label} is locked by another process (waited {timeout:g} s for it); try again "
                               "when that process is done", "the study database is busy")
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return DatabaseProblem(f"{label} is corrupted ({text}); restore it from a backup",
                               "the study database is corrupted")
    return DatabaseProblem(f"{label} cannot be read ({text})", "the study database cannot be read")


def problem_from(error: Exception, db: str, timeout: float | None = None) -> DatabaseProblem:
    """One line for a SQLAlchemy/driver error: which database, and what is wrong with it."""
    timeout = default_timeout() if timeout is None else timeout
    original = getattr(error, "orig", None) or error
    first_line = (str(original).strip().splitlines() or [type(original).__name__])[0]
    label = database_label(db)
    if isinstance(original, sqlite3.Error):
        return _sqlite_problem(label, first_line, timeout)
    if isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return DatabaseProblem(f"cannot use the study database {label} ({first_line})",
                               "the study database cannot be reached")
    return DatabaseProblem(f"the study database {label} failed ({first_line})", "the study database failed")


def unavailable(error: BaseException) -> bool:
    """Whether `error` means the database cannot serve now (down, locked, corrupted), not a bug in a query."""
    if isinstance(error, (sa.exc.IntegrityError, sa.exc.ProgrammingError)):
        return False
    return isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DatabaseError))


@contextmanager
def database_errors(db: str) -> Iterator[None]:
    """Turn the database's failures inside the block into one-line DatabaseProblems naming `db`."""
    try:
        yield
    except sa.exc.SQLAlchemyError as error:
        if not unavailable(error):
            raise
        raise problem_from(error, db) from None


def sqlite_tables(path: Path, timeout: float = 30.0) -> set[str]:
    """The tables of an existing SQLite file, read without changing it; a DatabaseProblem when it is not a
    readable SQLite database or fails `PRAGMA quick_check`. An empty file has no tables."""
    size = path.stat().st_size
    if size == 0:
        return set()
    with open(path, "rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise DatabaseProblem(f"{path} is not a SQLite database (nor a study database)", NOT_A_STUDY)
    try:
        # mode=ro: never writes to the database file. (A WAL-mode file may get its -wal/-shm files.)
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if size <= QUICK_CHECK_MAX_BYTES:
                verdict = [row[0] for row in connection.execute("PRAGMA quick_check")]
                if verdict != ["ok"]:
                    raise DatabaseProblem(f"{path} is corrupted (quick_check: {verdict[0]}); restore it from a "
                                          "backup", "the study database is corrupted")
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise _sqlite_problem(str(path), str(error), timeout) from None
    return tables


def _configure_sqlite(timeout: float):
    def configure(dbapi_connection, _record) -> None:
        # Transactions are begun by `_begin_sqlite` (SQLAlchemy's recipe for pysqlite), so that a read-then-write
        # transaction can take the write lock first (BEGIN IMMEDIATE) and DDL is transactional too.
        dbapi_connection.isolation_level = None
        # WAL lets readers proceed while one writer commits; busy_timeout makes writers wait for the lock instead
        # of failing with "database is locked" when several annotators vote at the same moment.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return configure


def _begin_sqlite(connection) -> None:
    immediate = connection.get_execution_options().get("write_lock_first", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(db: str, *, must_exist: bool = True, timeout: float | None = None) -> sa.Engine:
    """Engine for `db` (path or URL).

    An existing SQLite file must be a study database (or, without `must_exist`, empty); anything else is a
    DatabaseProblem and the file is left as it was. With `must_exist`, a missing file is an error, not a new
    empty database. `timeout`: seconds to wait for SQLite's write lock (default ANNOTATE_DB_TIMEOUT or 30).
    """
    timeout = default_timeout() if timeout is None else timeout
    url = database_url(db)
    parsed = sa.engine.make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if path.exists():
            if not path.is_file():
                raise DatabaseProblem(f"{path} is not a file", NOT_A_STUDY)
            tables = sqlite_tables(path, timeout)
            missing = set(metadata.tables) - tables
            if tables and missing:
                raise DatabaseProblem(f"{path} is not a study database (it has tables {', '.join(sorted(tables))}"
                                      f"; missing: {', '.join(sorted(missing))})", NOT_A_STUDY)
            if not tables and must_exist:
                raise DatabaseProblem(f"{path} is empty, not a study database (create one with `python -m "
                                      "annotate.study create`)", NOT_A_STUDY)
        elif must_exist:
            raise DatabaseProblem(f"study database not found: {path}", "the study database was not found")
    engine = sa.create_engine(url, connect_args={"timeout": timeout} if is_sqlite else {})
    if is_sqlite:
        sa.event.listen(engine, "connect", _configure_sqlite(timeout))
        sa.event.listen(engine, "begin", _begin_sqlite)
    return engine


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that reads and then writes, safely across processes: on SQLite it takes the write lock
    before its first read (BEGIN IMMEDIATE), so two of them never decide on the same stale reading."""
    with engine.connect() as conn:
        conn.execution_options(write_lock_first=True)
        with conn.begin():
            yield conn


def create_schema(engine: sa.Engine) -> None:
    with write_transaction(engine) as conn:
        metadata.create_all(conn)


def check_schema(engine: sa.Engine) -> None:
    missing = set(metadata.tables) - set(sa.inspect(engine).get_table_names())
    if missing:
        raise DatabaseProblem(f"{database_label(str(engine.url))} is not a study database (missing tables: "
                              f"{', '.join(sorted(missing))})", NOT_A_STUDY)


def insert_ignore(engine: sa.Engine, table: sa.Table, rows: list[dict]) -> int:
    """Insert rows, silently skipping those that violate a unique constraint; returns how many were new."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        statement = sqlite_dialect.insert(table).on_conflict_do_nothing()
        with engine.begin() as conn:
            return sum(conn.execute(statement, row).rowcount for row in rows)
    if dialect == "postgresql":
        # RETURNING yields only the rows actually inserted (psycopg's rowcount is -1 for such a statement)
        statement = postgresql_dialect.insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
        with engine.begin() as conn:
            return sum(len(conn.execute(statement, row).all()) for row in rows)
    inserted = 0  # other dialects: one short transaction per row, duplicates rejected by the constraint
    for row in rows:
        try:
            with engine.begin() as conn:
                conn.execute(table.insert(), row)
            inserted += 1
        except IntegrityError:
            pass
    return inserted


# --- study lookup -------------------------------------------------------------------------------------------

def get_study(engine: sa.Engine, name: str | None = None) -> dict:
    """The named study, or the only one in the database."""
    check_schema(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(studies).order_by(studies.c.id)).mappings().all()
    if name is not None:
        rows = [r for r in rows if r["name"] == name]
        if not rows:
            raise StudyError(f"no study named {name!r} in this database")
    if not rows:
        raise StudyError("the database holds no study (create one with `python -m annotate.study create`)")
    if len(rows) > 1:
        raise StudyError("the database holds several studies; choose one with --study NAME: "
                         + ", ".join(r["name"] for r in rows))
    return dict(rows[0])


# --- annotators ---------------------------------------------------------------------------------------------

def valid_annotator_id(external_id: str) -> bool:
    return bool(ANNOTATOR_ID_PATTERN.match(external_id or ""))


def annotator_states(conn, study_id: int, now: float, lease_seconds: float) -> pd.DataFrame:
    """One row per annotator of the study: batch, votes cast, whether they finished their batch, and whether
    they count towards its coverage (finished, or active — registered or voted — within the lease)."""
    sizes = dict(conn.execute(sa.select(comparisons.c.batch, sa.func.count())
                              .where(comparisons.c.study_id == study_id).group_by(comparisons.c.batch)).all())
    cast = (sa.select(votes.c.annotator_id, sa.func.count().label("votes"),
                      sa.func.max(votes.c.created_at).label("last_vote"))
            .group_by(votes.c.annotator_id).subquery())
    rows = conn.execute(sa.select(annotators.c.id, annotators.c.batch, annotators.c.created_at, cast.c.votes,
                                  cast.c.last_vote)
                        .select_from(annotators.outerjoin(cast, cast.c.annotator_id == annotators.c.id))
                        .where(annotators.c.study_id == study_id)).all()
    frame = pd.DataFrame(rows, columns=["id", "batch", "created_at", "votes", "last_vote"])
    frame["votes"] = frame["votes"].fillna(0).astype(int)
    frame["finished"] = frame["votes"] >= frame["batch"].map(sizes).fillna(0) * len(QUESTIONS)
    last_seen = frame[["created_at", "last_vote"]].max(axis=1)
    frame["counts"] = frame["finished"] | (last_seen >= now - lease_seconds)
    return frame


def least_covered_batch(conn, study_id: int, now: float, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> int:
    """The batch with the fewest annotators counting towards it (lowest number on ties): the study fills evenly,
    and a batch taken by someone who left without voting is handed out again once their lease runs out."""
    batches = conn.execute(sa.select(comparisons.c.batch).where(comparisons.c.study_id == study_id)
                           .distinct().order_by(comparisons.c.batch)).scalars().all()
    if not batches:
        raise StudyError("the study has no comparisons")
    states = annotator_states(conn, study_id, now, lease_seconds)
    coverage = states[states["counts"]].groupby("batch").size()
    return min(batches, key=lambda batch: (int(coverage.get(batch, 0)), batch))


def register_annotator(engine: sa.Engine, study_id: int, external_id: str, now: float | None = None,
                       lease_seconds: float = DEFAULT_LEASE_SECONDS) -> dict:
    """Find or create the annotator; refuse one who already took part in another study.

    Reading the coverage and claiming a batch is one transaction that holds the write lock (SQLite) or the
    study's row lock (PostgreSQL and others) from the first read, so people arriving at the same instant, in
    any number of app processes, are dealt different batches.
    """
    if not valid_annotator_id(external_id):
        raise StudyError("annotator id must be 1-64 letters, digits or . _ @ -")
    now = time.time() if now is None else now
    find = sa.select(annotators).where(annotators.c.external_id == external_id)
    with write_transaction(engine) as conn:
        if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises every writer
            conn.execute(sa.select(studies.c.id).where(studies.c.id == study_id).with_for_update())
        row = conn.execute(find).mappings().first()
        if row is None:
            batch = least_covered_batch(conn, study_id, now, lease_seconds)
            values = {"external_id": external_id, "study_id": study_id, "batch": batch, "created_at": now}
            if conn.dialect.name in ("sqlite", "postgresql"):
                # The id may be registered at this moment by another study's transaction: first one wins.
                module = sqlite_dialect if conn.dialect.name == "sqlite" else postgresql_dialect
                conn.execute(module.insert(annotators).on_conflict_do_nothing(), values)
            else:
                conn.execute(annotators.insert(), values)
            row = conn.execute(find).mappings().one()
    if row["study_id"] != study_id:
        raise StudyError("this annotator id has already taken part in another study; each person may take part "
                         "in one study only")
    return dict(row)


# --- items and votes ----------------------------------------------------------------------------------------

def batch_items(engine: sa.Engine, study_id: int, batch: int) -> pd.DataFrame:
    """The browser-safe view of one batch: ids, prompt and image paths — no system ids, no names."""
    query = (sa.select(comparisons.c.id, comparisons.c.position, comparisons.c.prompt,
                       comparisons.c.left_path, comparisons.c.right_path)
             .where(comparisons.c.study_id == study_id, comparisons.c.batch == batch)
             .order_by(comparisons.c.position))
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all(),
                            columns=["id", "position", "prompt", "left_path", "right_path"])


def answered(engine: sa.Engine, annotator_id: int) -> set[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(votes.c.comparison_id, votes.c.question)
                            .where(votes.c.annotator_id == annotator_id)).all()
    return {(r[0], r[1]) for r in rows}


def next_item(items: pd.DataFrame, done: set[tuple[int, str]]) -> tuple[dict, str] | None:
    """First (comparison, question) of the batch without a vote — the resume point after any refresh."""
    for item in items.to_dict("records"):
        for question in QUESTIONS:
            if (item["id"], question) not in done:
                return item, question
    return None


def record_vote(engine: sa.Engine, annotator_id: int, comparison_id: int, question: str, choice: str,
                now: float | None = None) -> bool:
    """Store one vote in its own short transaction; False when it was already recorded (double submit)."""
    if question not in QUESTIONS or choice not in SIDES:
        raise ValueError(f"bad vote: question={question!r} choice={choice!r}")
    row = {"annotator_id": annotator_id, "comparison_id": comparison_id, "question": question, "choice": choice,
           "created_at": time.time() if now is None else now}
    return insert_ignore(engine, votes, [row]) == 1


def progress(engine: sa.Engine, study_id: int, now: float | None = None,
             lease_seconds: float = DEFAULT_LEASE_SECONDS) -> pd.DataFrame:
    """Per batch (admin page and `study info`; no names): comparisons; annotators registered, counting towards
    coverage and finished; votes cast on each question (one per comparison and annotator when finished)."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        items = pd.read_sql(sa.select(comparisons.c.batch, sa.func.count().label("comparisons"))
                            .where(comparisons.c.study_id == study_id).group_by(comparisons.c.batch), conn)
        states = annotator_states(conn, study_id, now, lease_seconds)
        cast = pd.read_sql(sa.select(comparisons.c.batch, votes.c.question, sa.func.count().label("n"))
                           .select_from(votes.join(comparisons, votes.c.comparison_id == comparisons.c.id))
                           .where(comparisons.c.study_id == study_id)
                           .group_by(comparisons.c.batch, votes.c.question), conn)
    people = states.groupby("batch").agg(annotators=("id", "size"), counting=("counts", "sum"),
                                         finished=("finished", "sum")).reset_index()
    per_question = (cast.pivot(index="batch", columns="question", values="n")
                    .reindex(columns=list(QUESTIONS)).add_suffix("_votes").reset_index())
    table = items.merge(people, on="batch", how="left").merge(per_question, on="batch", how="left").fillna(0)
    numbers = [c for c in table.columns if c != "batch"]
    table[numbers] = table[numbers].astype(int)
    return table.sort_values("batch", ignore_index=True)


def export_votes(engine: sa.Engine, study_id: int, with_names: bool = True) -> pd.DataFrame:
    """One row per vote with everything the analysis needs.

    `with_names=False` keeps only system ids and no paths — what the admin page hands to the browser.
    """
    left, right = systems.alias("left_sys"), systems.alias("right_sys")
    columns = [votes.c.id.label("vote_id"), annotators.c.external_id.label("annotator"),
               votes.c.comparison_id.label("comparison"), votes.c.question, votes.c.choice,
               votes.c.created_at, annotators.c.created_at.label("annotator_started_at"),
               comparisons.c.batch, comparisons.c.prompt_id, comparisons.c.prompt, comparisons.c.category,
               comparisons.c.challenge, comparisons.c.sample_index, comparisons.c.seed,
               comparisons.c.is_gold, comparisons.c.gold_side,
               comparisons.c.left_system_id, comparisons.c.right_system_id]
    if with_names:  # paths name run folders, which often name models: only with names
        columns += [comparisons.c.left_path, comparisons.c.right_path,
                    left.c.name.label("left_system"), right.c.name.label("right_system")]
    joined = (votes.join(annotators, votes.c.annotator_id == annotators.c.id)
              .join(comparisons, votes.c.comparison_id == comparisons.c.id)
              .join(left, comparisons.c.left_system_id == left.c.id)
              .join(right, comparisons.c.right_system_id == right.c.id))
    query = (sa.select(*columns).select_from(joined).where(comparisons.c.study_id == study_id)
             .order_by(votes.c.id))
    with engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    frame["is_gold"] = frame["is_gold"].astype(bool)
    return frame


def study_systems(engine: sa.Engine, study_id: int) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(systems).where(systems.c.study_id == study_id).order_by(systems.c.id), conn)


def study_comparisons(engine: sa.Engine, study_id: int) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(comparisons).where(comparisons.c.study_id == study_id)
                           .order_by(comparisons.c.batch, comparisons.c.position), conn)
