"""Blinded pairwise annotation app.

    streamlit run annotate/app.py -- --db results/study.db [--study NAME] [--root DIR] [--completion-url URL]

Annotators arrive with `?annotator=ID` (e.g. `?annotator={{%PROLIFIC_PID%}}`) or type an id once. All progress
lives in the database, so a refresh resumes at the first unanswered question. `?admin` opens the admin page,
guarded by the password in the ANNOTATE_ADMIN_PASSWORD environment variable.

Every option can also come from the environment (ANNOTATE_DB, ANNOTATE_STUDY, ANNOTATE_ROOT,
ANNOTATE_COMPLETION_URL); the command line wins. Blinding: the app never reads the `systems` table; images are
sent as bytes, so neither model names nor file paths reach the browser.
"""

from __future__ import annotations

import argparse
import hmac
import os
import re
import sys
import time
from pathlib import Path

import streamlit as st

from annotate import db
from annotate.db import QUESTION_TEXT, QUESTIONS, StudyError

# Two clicks closer than this are one double click: the second must not answer the next question, which takes
# the same screen position a moment later.
MIN_SECONDS_BETWEEN_VOTES = float(os.environ.get("ANNOTATE_MIN_SECONDS", "0.5"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="annotate/app.py", allow_abbrev=False)
    parser.add_argument("--db", default=os.environ.get("ANNOTATE_DB"))
    parser.add_argument("--study", default=os.environ.get("ANNOTATE_STUDY"))
    parser.add_argument("--root", default=os.environ.get("ANNOTATE_ROOT"), help="override the recorded image root")
    parser.add_argument("--completion-url", default=os.environ.get("ANNOTATE_COMPLETION_URL"))
    args, _ = parser.parse_known_args(argv)  # under AppTest, argv is the test runner's
    return args


@st.cache_resource
def engine_for(database: str):
    return db.make_engine(database)


def escape_markdown(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text)


def read_image(root: str, relative: str) -> bytes | None:
    try:
        return (Path(root) / relative).read_bytes()
    except OSError as error:
        print(f"annotate: cannot read image {relative!r} under {root!r}: {error}", file=sys.stderr)
        return None


# --- annotator identification ---------------------------------------------------------------------------------

def annotator_from_query() -> str | None:
    return st.query_params.get("annotator") or st.query_params.get("PROLIFIC_PID")


def identify(engine, study: dict) -> dict | None:
    """The registered annotator, or None after asking for an id (which then goes into the URL)."""
    external = annotator_from_query()
    if not external:
        st.title("Image preference study")
        st.write("You will see a text prompt above two images and answer two questions about them by choosing "
                 "the left or the right image. Use the buttons or the ← and → keys.")
        with st.form("identify"):
            value = st.text_input("Your participant id", key="annotator_input")
            started = st.form_submit_button("Start")
        if started:
            if db.valid_annotator_id(value.strip()):
                st.query_params["annotator"] = value.strip()  # a refresh keeps the id
                st.rerun()
            st.error("The id may contain only letters, digits and . _ @ - (at most 64 characters).")
        return None
    cached = st.session_state.get("annotator")
    if cached and cached["external_id"] == external:
        return cached
    try:
        annotator = db.register_annotator(engine, study["id"], external)
    except StudyError as error:
        st.error(str(error))
        return None
    st.session_state["annotator"] = annotator
    return annotator


# --- voting ---------------------------------------------------------------------------------------------------

def submit_vote(engine, annotator_id: int, comparison_id: int, question: str, choice: str) -> None:
    """Button callback, bound to the item that was on screen when the button was drawn."""
    now = time.time()
    if now - st.session_state.get("last_vote_at", 0.0) < MIN_SECONDS_BETWEEN_VOTES:
        return  # the second half of a double click
    db.record_vote(engine, annotator_id, comparison_id, question, choice, now=now)
    st.session_state["last_vote_at"] = now


def annotate_page(engine, study: dict, annotator: dict, root: str, completion_url: str | None) -> None:
    items = db.batch_items(engine, study["id"], annotator["batch"])
    done = db.answered(engine, annotator["id"])
    total = len(items) * len(QUESTIONS)
    answered_here = sum((i, q) in done for i in items["id"] for q in QUESTIONS)
    st.progress(answered_here / max(total, 1), text=f"{answered_here} of {total} answered")
    current = db.next_item(items, done)
    if current is None:
        st.success("All done — thank you for taking part!")
        if completion_url:
            st.link_button("Return to the study platform", completion_url)
        return
    item, question = current
    st.markdown(f"### {escape_markdown(item['prompt'])}")
    columns = st.columns(2)
    for column, side in zip(columns, db.SIDES):
        image = read_image(root, item[f"{side}_path"])
        if image is None:
            column.error(f"Image missing (item {item['id']}); please tell the study organiser.")
        else:
            # PNG: the default "auto" may re-encode as JPEG, and compression artefacts would bias a quality study
            column.image(image, caption=f"{side.capitalize()} image", width="stretch", output_format="PNG")
    number = QUESTIONS.index(question) + 1
    st.markdown(f"**Question {number} of {len(QUESTIONS)}.** {QUESTION_TEXT[question]}")
    buttons = st.columns(2)
    for column, side, label, key in ((buttons[0], "left", "◀ Left image", "Left"),
                                     (buttons[1], "right", "Right image ▶", "Right")):
        column.button(label, key=f"vote-{item['id']}-{question}-{side}", shortcut=key, width="stretch",
                      on_click=submit_vote, args=(engine, annotator["id"], item["id"], question, side))
    st.caption("Keyboard: ← for the left image, → for the right image.")


# --- admin ----------------------------------------------------------------------------------------------------

def admin_page(engine, study: dict) -> None:
    st.title("Study admin")
    password = os.environ.get("ANNOTATE_ADMIN_PASSWORD")
    if not password:
        st.error("The admin page is disabled: set ANNOTATE_ADMIN_PASSWORD before starting the app.")
        return
    if not st.session_state.get("admin_ok"):
        with st.form("admin_login"):
            typed = st.text_input("Password", type="password", key="admin_password")
            submitted = st.form_submit_button("Log in")
        if submitted:
            if hmac.compare_digest(typed.encode(), password.encode()):
                st.session_state["admin_ok"] = True
                st.rerun()
            st.error("Wrong password.")
        return
    table = db.progress(engine, study["id"])
    votes = db.export_votes(engine, study["id"], with_names=False)
    cols = st.columns(3)
    cols[0].metric("votes", f"{len(votes)} / {int(table['votes_needed'].sum())}")
    cols[1].metric("annotators", int(table["annotators"].sum()))
    cols[2].metric("batches", len(table))
    st.subheader("Progress per batch")
    st.dataframe(table, hide_index=True)
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
        engine = engine_for(args.db)
        study = db.get_study(engine, args.study)
    except StudyError as error:
        st.error(str(error))
        return
    if "admin" in st.query_params:
        admin_page(engine, study)
        return
    annotator = identify(engine, study)
    if annotator is not None:
        annotate_page(engine, study, annotator, args.root or study["root"], args.completion_url)


main()
