"""Blinded pairwise annotation app.

    streamlit run annotate/app.py -- --db results/study.db [--study NAME] [--root DIR] [--completion-url URL]

Annotators arrive with `?annotator=ID` (e.g. `?annotator={{%PROLIFIC_PID%}}`) or type an id once. All progress
lives in the database, so a refresh resumes at the first unanswered question. `?admin` opens the admin page,
guarded by the password in the ANNOTATE_ADMIN_PASSWORD environment variable.

Every option can also come from the environment (ANNOTATE_DB, ANNOTATE_STUDY, ANNOTATE_ROOT,
ANNOTATE_COMPLETION_URL, ANNOTATE_LEASE_MINUTES); the command line wins. Blinding: the app never reads the
`systems` table; images are sent as bytes, so neither model names nor file paths reach the browser.

What can go wrong, and what people see (docs/human-eval.md): an item whose two images cannot both be shown is
never votable (it is skipped and stays open for others; the admin page lists the images); a vote the database
cannot take now (locked, down) is kept in the session and saved with the next interaction, never dropped or
doubled; a database problem is a short message, never a traceback, SQL or a server path.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import sys
import time

import sqlalchemy as sa
import streamlit as st

from annotate import db
from annotate.db import QUESTION_TEXT, QUESTIONS, DatabaseProblem, StudyError
from annotate.images import image_problems, read_image

# Two clicks closer than this are one double click: the second must not answer the next question, which takes
# the same screen position a moment later.
MIN_SECONDS_BETWEEN_VOTES = float(os.environ.get("ANNOTATE_MIN_SECONDS", "0.5"))
# Wrong admin passwords a session may try before it must wait ADMIN_LOCKOUT_SECONDS between further tries.
ADMIN_ATTEMPTS = int(os.environ.get("ANNOTATE_ADMIN_ATTEMPTS", "5"))
ADMIN_LOCKOUT_SECONDS = float(os.environ.get("ANNOTATE_ADMIN_LOCKOUT_SECONDS", "60"))

ID_RULE = "The id may contain only letters, digits and . _ @ - (at most 64 characters)."
UNAVAILABLE = ("The study is not available right now ({reason}). Your saved answers are safe. Please try again "
               "in a minute; if this goes on, tell the study organiser.")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="annotate/app.py", allow_abbrev=False)
    parser.add_argument("--db", default=os.environ.get("ANNOTATE_DB"))
    parser.add_argument("--study", default=os.environ.get("ANNOTATE_STUDY"))
    parser.add_argument("--root", default=os.environ.get("ANNOTATE_ROOT"), help="override the recorded image root")
    parser.add_argument("--completion-url", default=os.environ.get("ANNOTATE_COMPLETION_URL"))
    parser.add_argument("--lease-minutes", type=float,
                        default=float(os.environ.get("ANNOTATE_LEASE_MINUTES", db.DEFAULT_LEASE_SECONDS / 60)),
                        help="an annotator with no vote for this long stops holding their batch (default 30)")
    args, _ = parser.parse_known_args(argv)  # under AppTest, argv is the test runner's
    return args


def log(message: str) -> None:
    """For the operator's terminal: the details people in the browser are not shown."""
    print(f"annotate: {message}", file=sys.stderr)


@st.cache_resource
def engine_for(database: str, timeout: float):
    return db.make_engine(database, timeout=timeout)  # a DatabaseProblem is not cached: the next load tries again


def escape_markdown(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text)


# --- annotator identification ---------------------------------------------------------------------------------

def annotator_from_query() -> str | None:
    value = st.query_params.get("annotator") or st.query_params.get("PROLIFIC_PID")
    return (value.strip() or None) if value else None  # trimmed as the form trims


def id_form() -> None:
    st.title("Image preference study")
    st.write("You will see a text prompt above two images and answer two questions about them by choosing "
             "the left or the right image. Use the buttons or the ← and → keys.")
    with st.form("identify"):
        value = st.text_input("Your participant id", key="annotator_input")
        started = st.form_submit_button("Start")
    if started:
        if db.valid_annotator_id(value.strip()):
            st.query_params.pop("PROLIFIC_PID", None)
            st.query_params["annotator"] = value.strip()  # a refresh keeps the id
            st.rerun()
        st.error(ID_RULE)


def identify(engine, study: dict, lease_minutes: float) -> dict | None:
    """The registered annotator, or None after asking for an id (which then goes into the URL)."""
    external = annotator_from_query()
    if external and not db.valid_annotator_id(external):
        st.error(f"The participant id in this link is not valid. {ID_RULE} Please enter your id below.")
        external = None
    if not external:
        id_form()
        return None
    cached = st.session_state.get("annotator")
    if cached and cached["external_id"] == external:
        return cached
    try:
        annotator = db.register_annotator(engine, study["id"], external, lease_seconds=lease_minutes * 60)
    except StudyError as error:  # e.g. the id took part in another study
        st.error(str(error))
        return None
    st.session_state["annotator"] = annotator
    return annotator


# --- voting ---------------------------------------------------------------------------------------------------

def pending_votes() -> dict:
    """Votes taken in this session but not yet in the database: (annotator, comparison, question) → (choice, at)."""
    return st.session_state.setdefault("pending_votes", {})


def save_pending(engine) -> bool:
    """Store the votes waiting in this session; True when none is left. Insert-or-ignore: a retry never doubles."""
    waiting = pending_votes()
    for key, (choice, at) in list(waiting.items()):
        try:
            db.record_vote(engine, *key, choice, now=at)
        except sa.exc.SQLAlchemyError as error:
            if not db.unavailable(error):
                raise
            log(f"a vote is kept in the session for a retry: {db.problem_from(error, str(engine.url))}")
            return False
        del waiting[key]
    return True


def submit_vote(engine, annotator_id: int, comparison_id: int, question: str, choice: str) -> None:
    """Button callback, bound to the item that was on screen when the button was drawn."""
    now = time.time()
    if now - st.session_state.get("last_vote_at", 0.0) < MIN_SECONDS_BETWEEN_VOTES:
        return  # the second half of a double click
    st.session_state["last_vote_at"] = now
    pending_votes()[(annotator_id, comparison_id, question)] = (choice, now)  # kept until the database has it
    save_pending(engine)


def showable(item: dict, root: str) -> dict[str, bytes] | None:
    """Both images of an item as bytes, or None (logged) when either is missing or does not decode."""
    images = {}
    for side in db.SIDES:
        data, problem = read_image(root, item[f"{side}_path"])
        if data is None:
            log(f"item {item['id']} cannot be shown: {item[f'{side}_path']!r} under {root!r} is {problem}")
            return None
        images[side] = data
    return images


def annotate_page(engine, study: dict, annotator: dict, root: str, completion_url: str | None) -> None:
    saved = save_pending(engine)
    items = db.batch_items(engine, study["id"], annotator["batch"])
    done = db.answered(engine, annotator["id"])
    waiting = {(c, q) for (a, c, q) in pending_votes() if a == annotator["id"]}
    skipped = st.session_state.setdefault("unshowable", set())  # items this session could not show
    total = len(items) * len(QUESTIONS)
    answered_here = sum((i, q) in done | waiting for i in items["id"] for q in QUESTIONS)
    st.progress(answered_here / max(total, 1), text=f"{answered_here} of {total} answered")
    if not saved:
        st.warning(f"{len(waiting)} answer(s) not saved yet: the study database is busy. They are kept in this tab "
                   "and saved with your next answer; please keep this tab open.")
        st.button("Save now", key="save-now")
    while True:  # the first question left whose two images can both be shown
        current = db.next_item(items, done | waiting | {(i, q) for i in skipped for q in QUESTIONS})
        if current is None:
            break
        images = showable(current[0], root)
        if images is not None:
            break
        skipped.add(current[0]["id"])
    unanswered_skipped = [i for i in items["id"] if i in skipped and any((i, q) not in done for q in QUESTIONS)]
    if unanswered_skipped:
        st.info(f"{len(unanswered_skipped)} pair(s) of your set could not be shown (an image is missing or damaged) "
                "and were skipped; they stay open for others. The study organiser sees them on the admin page.")
    if current is None:
        if not saved:
            st.info("Saving your last answers… press “Save now” in a moment.")
        elif unanswered_skipped and len(unanswered_skipped) == len(items):
            st.error("None of the pairs of your set can be shown right now. Please try again later.")
        else:
            st.success("All done — thank you for taking part!")
            if completion_url:
                st.link_button("Return to the study platform", completion_url)
        return
    item, question = current
    st.markdown(f"### {escape_markdown(item['prompt'])}")
    # Side by side at any width (no stacking on phones): a comparison needs both images in view.
    columns = st.columns(2, wrap=False)
    for column, side in zip(columns, db.SIDES):
        # PNG: the default "auto" may re-encode as JPEG, and compression artefacts would bias a quality study
        column.image(images[side], caption=f"{side.capitalize()} image", alt=f"{side} image", width="stretch",
                     output_format="PNG")
    number = QUESTIONS.index(question) + 1
    st.markdown(f"**Question {number} of {len(QUESTIONS)}.** {QUESTION_TEXT[question]}")
    buttons = st.columns(2, wrap=False)
    for column, side, label, key in ((buttons[0], "left", "◀ Left image", "Left"),
                                     (buttons[1], "right", "Right image ▶", "Right")):
        column.button(label, key=f"vote-{item['id']}-{question}-{side}", shortcut=key, width="stretch",
                      on_click=submit_vote, args=(engine, annotator["id"], item["id"], question, side))
    st.caption("Keyboard: ← for the left image, → for the right image.")


# --- admin ----------------------------------------------------------------------------------------------------

def password_matches(typed: str, password: str) -> bool:
    # Digests of equal length, so the comparison takes the same time whatever the typed length or content.
    return hmac.compare_digest(hashlib.sha256(typed.encode()).digest(), hashlib.sha256(password.encode()).digest())


def admin_login(password: str) -> None:
    failures = st.session_state.setdefault("admin_failures", [])
    with st.form("admin_login"):
        typed = st.text_input("Password", type="password", key="admin_password")
        submitted = st.form_submit_button("Log in")
    if not submitted:
        return
    wait = ADMIN_LOCKOUT_SECONDS - (time.time() - failures[-1]) if len(failures) >= ADMIN_ATTEMPTS else 0
    if wait > 0:  # a rate limit per session: guessing costs time
        st.error(f"Too many wrong passwords; try again in {wait:.0f} s.")
        return
    if password_matches(typed, password):
        st.session_state["admin_ok"] = True
        failures.clear()
        st.rerun()
    failures.append(time.time())
    st.error("Wrong password.")


@st.cache_data(ttl=60, show_spinner="Checking the study's images…")
def cached_image_problems(root: str, paths: tuple[str, ...]) -> list[tuple[str, str]]:
    return image_problems(root, paths)


def admin_page(engine, study: dict, root: str, lease_minutes: float) -> None:
    st.title("Study admin")
    password = os.environ.get("ANNOTATE_ADMIN_PASSWORD")
    if not password:
        st.error("The admin page is disabled: set ANNOTATE_ADMIN_PASSWORD before starting the app.")
        return
    if not st.session_state.get("admin_ok"):
        admin_login(password)
        return
    table = db.progress(engine, study["id"], lease_seconds=lease_minutes * 60)
    votes = db.export_votes(engine, study["id"], with_names=False)
    cols = st.columns(4)
    for column, question in zip(cols, QUESTIONS):
        column.metric(f"{question} votes", int(table[f"{question}_votes"].sum()))
    cols[2].metric("annotators (finished)", f"{int(table['annotators'].sum())} ({int(table['finished'].sum())})")
    cols[3].metric("batches", len(table))
    st.subheader("Progress per batch")
    st.caption(f"Votes are counted per question: an annotator who finishes a batch casts one vote per question on "
               f"each of its comparisons. 'counting' = annotators who hold the batch now (finished, or active in "
               f"the last {lease_minutes:g} min).")
    st.dataframe(table, hide_index=True)
    comparisons = db.study_comparisons(engine, study["id"])
    problems = cached_image_problems(root, tuple(comparisons["left_path"]) + tuple(comparisons["right_path"]))
    st.subheader("Images")
    if problems:
        st.error(f"{len(problems)} image(s) cannot be shown, so their items are skipped for everyone (images under "
                 f"{root}):")
        st.dataframe([{"image": path, "problem": problem} for path, problem in problems], hide_index=True)
    else:
        st.caption(f"Every image of the study decodes (checked at most a minute ago, under {root}).")
    gold = votes[votes["is_gold"] & (votes["question"] == "alignment")]
    if len(gold):
        st.subheader("Gold checks per annotator")
        per = (gold.assign(correct=gold["choice"] == gold["gold_side"]).groupby("annotator")["correct"]
               .agg(checks="size", passed="sum").reset_index())
        st.dataframe(per, hide_index=True)
    st.subheader("Export")
    st.caption("System ids only; `python -m annotate.study export` writes the same table with names.")
    st.download_button("votes.csv", votes.to_csv(index=False).encode(), "votes.csv", "text/csv")
    st.download_button("votes.parquet", votes.to_parquet(index=False), "votes.parquet",
                       "application/octet-stream")


# --- entry ----------------------------------------------------------------------------------------------------

def main() -> None:
    st.set_page_config(page_title="Image preference study", layout="centered")
    args = parse_args(sys.argv[1:])
    if not args.db:
        st.error("No study database: start with `streamlit run annotate/app.py -- --db results/study.db`.")
        return
    try:
        with db.database_errors(args.db):
            engine = engine_for(args.db, db.default_timeout())
            study = db.get_study(engine, args.study)
            root = args.root or study["root"]
            if "admin" in st.query_params:
                admin_page(engine, study, root, args.lease_minutes)
                return
            annotator = identify(engine, study, args.lease_minutes)
            if annotator is not None:
                annotate_page(engine, study, annotator, root, args.completion_url)
    except DatabaseProblem as problem:
        log(str(problem))  # the operator's terminal gets the file and the detail; people get a short message
        st.error(UNAVAILABLE.format(reason=problem.reason))
        if st.session_state.get("admin_ok"):
            st.caption(str(problem))
        st.button("Try again", key="retry")
    except StudyError as error:  # no such study / several studies: words the operator chose, no paths
        st.error(str(error))


main()
