"""The Streamlit app driven headlessly with streamlit.testing.v1.AppTest."""

import random
import sqlite3
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from annotate import db
from annotate.study import create_study
from bench.runfolder import read_runs

from conftest import MODEL_NAMES

APP = str(Path(__file__).resolve().parents[2] / "annotate" / "app.py")


@pytest.fixture(autouse=True)
def app_env(monkeypatch, study_db):
    monkeypatch.setenv("ANNOTATE_DB", str(study_db))
    monkeypatch.setenv("ANNOTATE_MIN_SECONDS", "0")  # AppTest clicks faster than any person
    monkeypatch.delenv("ANNOTATE_ADMIN_PASSWORD", raising=False)


def open_app(annotator: str | None = None, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if annotator:
        at.query_params["annotator"] = annotator
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def vote_buttons(at: AppTest) -> dict:
    return {b.key.rsplit("-", 1)[1]: b for b in at.button if b.key and b.key.startswith("vote-")}


def current(at: AppTest) -> tuple[int, str]:
    _, comparison, question, _ = vote_buttons(at)["left"].key.split("-")
    return int(comparison), question


def stored_votes(study_db):
    engine = db.make_engine(str(study_db))
    return db.export_votes(engine, db.get_study(engine)["id"])


def all_text(at: AppTest) -> str:
    """Every element the browser would receive, as protobuf text (labels, captions, markdown, image URLs…)."""
    seen, stack = [], [at._tree]
    while stack:
        node = stack.pop()
        proto = getattr(node, "proto", None)
        if proto is not None:
            seen.append(str(proto))
        children = getattr(node, "children", {})
        stack.extend(children.values() if isinstance(children, dict) else children)
    return "\n".join(seen)


def test_vote_is_recorded_for_the_item_on_screen(study_db):
    at = open_app("p1")
    assert not at.exception
    comparison, question = current(at)
    assert question == "alignment"
    assert "Which image looks more representative of the text shown above" in " ".join(m.value for m in at.markdown)
    images = at.get("image")
    assert len(images) == 2 and all(i.proto.imgs[0].url.endswith(".png") for i in images)  # lossless
    vote_buttons(at)["right"].click().run()
    votes = stored_votes(study_db)
    assert votes[["annotator", "comparison", "question", "choice"]].values.tolist() == [
        ["p1", comparison, "alignment", "right"]]
    assert current(at) == (comparison, "quality")
    assert "higher quality and aesthetically more pleasing" in " ".join(m.value for m in at.markdown)


def test_refresh_resumes_from_the_database(study_db):
    first = open_app("p1")
    for _ in range(3):
        vote_buttons(first)["left"].click().run()
    position = current(first)
    refreshed = open_app("p1")  # a new session: nothing carried over but the URL
    assert current(refreshed) == position
    assert refreshed.get("progress")[0].proto.text.startswith("3 of ")


def test_double_submit_records_one_vote(study_db):
    tab_a, tab_b = open_app("p1"), open_app("p1")  # two tabs (or two clicks) on the same item
    assert current(tab_a) == current(tab_b)
    vote_buttons(tab_a)["left"].click().run()
    vote_buttons(tab_b)["right"].click().run()
    votes = stored_votes(study_db)
    assert len(votes) == 1 and votes["choice"].iloc[0] == "left"  # the first answer stands
    assert current(tab_a) == current(tab_b)  # both tabs move on to the same next question


def test_double_click_does_not_answer_the_next_question(study_db, monkeypatch):
    monkeypatch.setenv("ANNOTATE_MIN_SECONDS", "30")
    at = open_app("p1")
    first = current(at)
    vote_buttons(at)["left"].click().run()
    vote_buttons(at)["left"].click().run()  # lands on the next question's button a moment later
    assert len(stored_votes(study_db)) == 1
    assert current(at) == (first[0], "quality")


def test_model_names_never_reach_the_browser(study_db, run_dirs):
    forbidden = [*MODEL_NAMES, *(d.name for d in run_dirs), "step"]
    texts, image_urls = [all_text(open_app())], []
    at = open_app("p1")
    while True:  # every screen of a whole batch, snapshotted before each click (the AppTest object mutates)
        texts.append(all_text(at))
        image_urls += [i.url for element in at.get("image") for i in element.proto.imgs]
        if not vote_buttons(at):
            break
        vote_buttons(at)["left"].click().run()
    assert "All done" in " ".join(s.value for s in at.success)
    assert sum("a red circle number 0" in t for t in texts) >= 1  # the walk does see the page content
    for text in texts:
        for name in forbidden:
            assert name.lower() not in text.lower(), name
    assert len(image_urls) >= 16 and all("/media/" in url for url in image_urls)  # content hashes, no paths


def test_identify_once_puts_the_id_in_the_url(study_db):
    at = open_app()
    assert not vote_buttons(at)
    at.text_input(key="annotator_input").input("bad id!")
    at.button[0].click().run()
    assert at.error and not vote_buttons(at)
    at.text_input(key="annotator_input").input("PID_123")
    at.button[0].click().run()
    assert at.query_params["annotator"] == ["PID_123"] or at.query_params["annotator"] == "PID_123"
    assert vote_buttons(at)


def test_annotator_from_another_study_is_refused(study_db, run_dirs, monkeypatch):
    engine = db.make_engine(str(study_db))
    model, *baselines = read_runs(run_dirs[:2])
    other = create_study(engine, "other", model, baselines, "parti128", 2, 1, 8, 0)
    db.register_annotator(engine, other["study_id"], "veteran")
    monkeypatch.setenv("ANNOTATE_STUDY", "test")
    at = open_app("veteran")
    assert "another study" in " ".join(e.value for e in at.error)
    assert not vote_buttons(at)


def test_admin_page_needs_the_password(study_db, monkeypatch):
    at = open_app(admin="1")
    assert "disabled" in " ".join(e.value for e in at.error)
    monkeypatch.setenv("ANNOTATE_ADMIN_PASSWORD", "s3cret")
    at = open_app(admin="1")
    assert not at.get("download_button") and not at.dataframe
    at.text_input(key="admin_password").input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in " ".join(e.value for e in at.error)
    assert not at.get("download_button")
    annotator = open_app("p1")
    vote_buttons(annotator)["left"].click().run()
    at.text_input(key="admin_password").input("s3cret")
    at.button[0].click().run()
    downloads = at.get("download_button")
    assert len(downloads) == 2 and at.dataframe
    assert (at.metric[0].label, at.metric[0].value) == ("alignment votes", "1")  # counted per question
    text = all_text(at).lower()
    assert not any(name in text for name in MODEL_NAMES)


def test_missing_database_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOTATE_DB", str(tmp_path / "missing.db"))
    at = open_app("p1")
    assert "not found" in " ".join(e.value for e in at.error)
    assert not (tmp_path / "missing.db").exists()


# --- what can go wrong: images that cannot be shown --------------------------------------------------------------

def texts(elements) -> str:
    return " ".join(e.value for e in elements)


def first_item_of(study_db, annotator: str):
    """Register `annotator` as the app would and return (its batch's items, the study's root)."""
    engine = db.make_engine(str(study_db))
    info = db.get_study(engine)
    registered = db.register_annotator(engine, info["id"], annotator)
    return db.batch_items(engine, info["id"], registered["batch"]), Path(info["root"])


def test_a_wrong_image_root_offers_nothing_to_vote_on(study_db, monkeypatch):
    monkeypatch.setenv("ANNOTATE_ROOT", "/nonexistent")
    at = open_app("mo")
    assert not at.exception and not vote_buttons(at)
    assert "None of the pairs of your set can be shown" in texts(at.error)
    assert "All done" not in texts(at.success) and not at.get("link_button")
    assert len(stored_votes(study_db)) == 0
    monkeypatch.setenv("ANNOTATE_ADMIN_PASSWORD", "pw")  # the organiser sees why
    admin = open_app(admin="1")
    admin.text_input(key="admin_password").input("pw")
    admin.button[0].click().run()
    assert "cannot be shown" in texts(admin.error) and "missing" in all_text(admin)


def test_a_damaged_image_is_skipped_and_its_item_stays_open(study_db):
    items, root = first_item_of(study_db, "p1")
    damaged = root / items["left_path"].iloc[0]
    original = damaged.read_bytes()
    damaged.write_bytes(original[: len(original) // 2])
    at = open_app("p1")
    assert not at.exception
    shown, question = current(at)
    assert shown == int(items["id"].iloc[1]) and question == "alignment"  # the next pair, not the damaged one
    assert "could not be shown" in texts(at.info)
    vote_buttons(at)["left"].click().run()
    votes = stored_votes(study_db)
    assert votes["comparison"].tolist() == [shown]  # nothing recorded on the pair that was not shown
    damaged.write_bytes(original)  # repaired: a new visit offers the pair again
    assert current(open_app("p1")) == (int(items["id"].iloc[0]), "alignment")


def test_the_admin_page_lists_damaged_images(study_db, monkeypatch):
    items, root = first_item_of(study_db, "p1")
    (root / items["right_path"].iloc[2]).write_bytes(b"not a png")
    monkeypatch.setenv("ANNOTATE_ADMIN_PASSWORD", "pw")
    at = open_app(admin="1")
    at.text_input(key="admin_password").input("pw")
    at.button[0].click().run()
    assert "1 image(s) cannot be shown" in texts(at.error)
    assert items["right_path"].iloc[2] in all_text(at) and "cannot be decoded" in all_text(at)


# --- what can go wrong: the database -------------------------------------------------------------------------------

def test_a_vote_the_locked_database_cannot_take_is_kept_and_saved_later(study_db, monkeypatch):
    monkeypatch.setenv("ANNOTATE_DB_TIMEOUT", "0.2")
    at = open_app("p1")
    comparison, _ = current(at)
    holder = sqlite3.connect(study_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
    try:
        vote_buttons(at)["right"].click().run()
        assert not at.exception
        assert "1 answer(s) not saved yet" in texts(at.warning)
        assert current(at) == (comparison, "quality")  # the annotator goes on
        assert len(stored_votes(study_db)) == 0
        vote_buttons(at)["left"].click().run()  # a second answer waits too
        assert "2 answer(s) not saved yet" in texts(at.warning)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    at.button(key="save-now").click().run()
    assert not at.warning
    votes = stored_votes(study_db)
    assert votes[["comparison", "question", "choice"]].values.tolist() == [
        [comparison, "alignment", "right"], [comparison, "quality", "left"]]
    vote_buttons(at)["left"].click().run()
    assert len(stored_votes(study_db)) == 3  # saved once each, never doubled


def corrupt(path: Path) -> None:
    """Overwrite every page after the first with noise (the schema page stays readable)."""
    data = bytearray(path.read_bytes())
    noise = random.Random(0)
    for start in range(4096, len(data), 4096):
        data[start + 100:start + 4000] = bytes(noise.getrandbits(8) for _ in range(3900))
    path.write_bytes(bytes(data))


def test_a_corrupted_database_is_a_short_message(study_db, tmp_path, monkeypatch):
    corrupt(study_db)
    at = open_app("p1")
    assert not at.exception and not vote_buttons(at)
    message = texts(at.error)
    assert "the study database is corrupted" in message
    page = all_text(at).lower()
    assert not any(word in page for word in (str(tmp_path).lower(), "sqlite", "select", "traceback", "quick_check"))


def sqlite_file_state(path: Path):
    siblings = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
    return path.read_bytes(), siblings


@pytest.mark.parametrize("kind", ["other_database", "empty_file"])
def test_a_file_that_is_not_a_study_is_never_changed(tmp_path, monkeypatch, kind):
    path = tmp_path / "notes.db"
    if kind == "other_database":
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE notes (text TEXT)")
            other.execute("INSERT INTO notes VALUES ('keep me')")
        other.close()
    else:
        path.touch()
    before = sqlite_file_state(path)
    monkeypatch.setenv("ANNOTATE_DB", str(path))
    at = open_app("p1")
    assert not at.exception and "not a study database" in texts(at.error)
    assert sqlite_file_state(path) == before  # same bytes (so still in its journal mode), no -wal/-shm


# --- smaller things ------------------------------------------------------------------------------------------------

def test_an_id_with_spaces_in_the_url_is_trimmed_as_in_the_form(study_db):
    at = open_app("  p1 ")
    vote_buttons(at)["left"].click().run()
    assert stored_votes(study_db)["annotator"].tolist() == ["p1"]


def test_a_bad_id_in_the_url_offers_the_form_again(study_db):
    at = open_app("bad id!")
    assert "not valid" in texts(at.error) and not vote_buttons(at)
    at.text_input(key="annotator_input").input("PID_9")
    at.button[0].click().run()
    assert vote_buttons(at)


def test_images_have_neutral_alt_text_and_stay_side_by_side(study_db):
    at = open_app("p1")
    assert [image.proto.imgs[0].alt for image in at.get("image")] == ["left image", "right image"]
    assert [image.proto.imgs[0].caption for image in at.get("image")] == ["Left image", "Right image"]
    # st.columns(wrap=False): the rows of images and of buttons never stack on a narrow screen (the browser
    # test measures it on a phone-sized page)
    rows, stack = [], [at._tree]
    while stack:
        node = stack.pop()
        proto = getattr(node, "proto", None)
        container = getattr(proto, "flex_container", None) if type(proto).__name__ == "Block" else None
        if container is not None and container.direction == 2:  # Block.FlexContainer.Direction.HORIZONTAL
            rows.append(container.wrap)
        children = getattr(node, "children", {})
        stack.extend(children.values() if isinstance(children, dict) else children)
    assert rows == [False, False]


def test_admin_passwords_are_rate_limited_per_session(study_db, monkeypatch):
    monkeypatch.setenv("ANNOTATE_ADMIN_PASSWORD", "s3cret")
    monkeypatch.setenv("ANNOTATE_ADMIN_ATTEMPTS", "3")
    monkeypatch.setenv("ANNOTATE_ADMIN_LOCKOUT_SECONDS", "2")
    at = open_app(admin="1")
    for _ in range(3):
        at.text_input(key="admin_password").input("guess")
        at.button[0].click().run()
        assert "Wrong password" in texts(at.error)
    at.text_input(key="admin_password").input("s3cret")
    at.button[0].click().run()
    assert "Too many wrong passwords" in texts(at.error) and not at.get("download_button")  # even the right one
    time.sleep(2.1)
    at.text_input(key="admin_password").input("s3cret")
    at.button[0].click().run()
    assert len(at.get("download_button")) == 2


def test_the_password_compare_takes_digests():
    from annotate.app import password_matches

    assert password_matches("s3cret", "s3cret") and not password_matches("s3cre", "s3cret")
    assert not password_matches("ünïcode-and-longer-than-the-password", "s3cret")
