"""The Streamlit app driven headlessly with streamlit.testing.v1.AppTest."""

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
    assert "1 / " in at.metric[0].value
    text = all_text(at).lower()
    assert not any(name in text for name in MODEL_NAMES)


def test_missing_database_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOTATE_DB", str(tmp_path / "missing.db"))
    at = open_app("p1")
    assert "not found" in " ".join(e.value for e in at.error)
    assert not (tmp_path / "missing.db").exists()
