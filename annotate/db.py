"""Study database: schema, engine and the few queries the app, the simulator and the report share.

Any SQLAlchemy URL works; a plain path means a SQLite file. The browser-facing queries (`next_item`,
`progress`) read only comparison ids, prompts and image paths — never the `systems` table, which is the only
place model names live.
"""

from __future__ import annotations

import re
import time
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


def database_url(db: str) -> str:
    """A SQLAlchemy URL from either a URL or a plain SQLite file path."""
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def _configure_sqlite(dbapi_connection, _record) -> None:
    # WAL lets readers proceed while one writer commits; busy_timeout makes writers wait for the lock instead
    # of failing with "database is locked" when several annotators vote at the same moment.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(db: str, *, must_exist: bool = True) -> sa.Engine:
    """Engine for `db` (path or URL). With `must_exist`, a missing SQLite file is an error, not a new empty db."""
    url = database_url(db)
    parsed = sa.engine.make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and must_exist and parsed.database and not Path(parsed.database).is_file():
        raise StudyError(f"study database not found: {parsed.database}")
    engine = sa.create_engine(url, connect_args={"timeout": 30} if is_sqlite else {})
    if is_sqlite:
        sa.event.listen(engine, "connect", _configure_sqlite)
    return engine


def create_schema(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def check_schema(engine: sa.Engine) -> None:
    missing = set(metadata.tables) - set(sa.inspect(engine).get_table_names())
    if missing:
        raise StudyError(f"not a study database (missing tables: {', '.join(sorted(missing))})")


def insert_ignore(engine: sa.Engine, table: sa.Table, rows: list[dict]) -> int:
    """Insert rows, silently skipping those that violate a unique constraint; returns how many were new."""
    dialect = engine.dialect.name
    if dialect in ("sqlite", "postgresql"):
        module = sqlite_dialect if dialect == "sqlite" else postgresql_dialect
        statement = module.insert(table).on_conflict_do_nothing()
        with engine.begin() as conn:
            return sum(conn.execute(statement, row).rowcount for row in rows)
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


def least_covered_batch(conn, study_id: int) -> int:
    """The batch with the fewest annotators so far (lowest number on ties): the study fills evenly."""
    batch_sizes = (sa.select(comparisons.c.batch).where(comparisons.c.study_id == study_id)
                   .distinct().subquery())
    claims = (sa.select(annotators.c.batch, sa.func.count().label("n"))
              .where(annotators.c.study_id == study_id).group_by(annotators.c.batch).subquery())
    query = (sa.select(batch_sizes.c.batch)
             .select_from(batch_sizes.outerjoin(claims, claims.c.batch == batch_sizes.c.batch))
             .order_by(sa.func.coalesce(claims.c.n, 0), batch_sizes.c.batch).limit(1))
    batch = conn.execute(query).scalar()
    if batch is None:
        raise StudyError("the study has no comparisons")
    return batch


def register_annotator(engine: sa.Engine, study_id: int, external_id: str, now: float | None = None) -> dict:
    """Find or create the annotator; refuse one who already took part in another study."""
    if not valid_annotator_id(external_id):
        raise StudyError("annotator id must be 1-64 letters, digits or . _ @ -")
    with engine.begin() as conn:
        batch = least_covered_batch(conn, study_id)
    # Insert-or-ignore, then read back: two tabs registering the same id at once end up with one row.
    insert_ignore(engine, annotators, [{"external_id": external_id, "study_id": study_id, "batch": batch,
                                        "created_at": time.time() if now is None else now}])
    with engine.connect() as conn:
        row = conn.execute(sa.select(annotators).where(annotators.c.external_id == external_id)).mappings().one()
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


def progress(engine: sa.Engine, study_id: int) -> pd.DataFrame:
    """Per batch: comparisons, annotators and votes so far (admin page; no names)."""
    with engine.connect() as conn:
        items = pd.read_sql(sa.select(comparisons.c.batch, sa.func.count().label("comparisons"))
                            .where(comparisons.c.study_id == study_id).group_by(comparisons.c.batch), conn)
        people = pd.read_sql(sa.select(annotators.c.batch, sa.func.count().label("annotators"))
                             .where(annotators.c.study_id == study_id).group_by(annotators.c.batch), conn)
        cast = (sa.select(comparisons.c.batch, sa.func.count().label("votes"))
                .select_from(votes.join(comparisons, votes.c.comparison_id == comparisons.c.id))
                .where(comparisons.c.study_id == study_id).group_by(comparisons.c.batch))
        counted = pd.read_sql(cast, conn)
    table = items.merge(people, on="batch", how="left").merge(counted, on="batch", how="left").fillna(0)
    table[["annotators", "votes"]] = table[["annotators", "votes"]].astype(int)
    table["votes_needed"] = table["comparisons"] * len(QUESTIONS)
    return table


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
