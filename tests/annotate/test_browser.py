"""Real browser: `streamlit run annotate/app.py` in a subprocess, headless Chromium votes with the keyboard.

Needs the `playwright` Python package (its driver only; no browser download) and Debian's `chromium`
(`apt-get install -y chromium`); skips with the reason otherwise. Set ANNOTATE_SCREENSHOT=docs/annotate-app.png
to refresh the screenshot kept in docs/.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from annotate import db

from conftest import MODEL_NAMES

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture
def served_app(study_db):
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "annotate" / "app.py"),
               "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal", "--", "--db", str(study_db)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "ANNOTATE_MIN_SECONDS": "0.5"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def votes_of(study_db, annotator: str):
    engine = db.make_engine(str(study_db))
    votes = db.export_votes(engine, db.get_study(engine)["id"])
    return votes[votes["annotator"] == annotator]


def wait_for_votes(study_db, annotator: str, n: int, seconds: float = 20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        votes = votes_of(study_db, annotator)
        if len(votes) >= n:
            return votes
        time.sleep(0.2)
    return votes_of(study_db, annotator)


def test_keyboard_vote_in_chromium(served_app, study_db, tmp_path):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(f"{served_app}/?annotator=browser1")
        page.get_by_text("Question 1 of 2").wait_for(timeout=60_000)
        page.locator("img").first.wait_for(timeout=30_000)
        screenshot = Path(os.environ.get("ANNOTATE_SCREENSHOT") or tmp_path / "annotate-app.png")
        page.screenshot(path=str(screenshot))
        html = page.content().lower()
        assert not any(name in html for name in MODEL_NAMES)

        page.keyboard.press("ArrowRight")  # the "Right image" shortcut
        votes = wait_for_votes(study_db, "browser1", 1)
        assert votes[["question", "choice"]].values.tolist() == [["alignment", "right"]]
        page.get_by_text("Question 2 of 2").wait_for(timeout=20_000)

        time.sleep(0.6)  # a person's pause; faster presses count as one double click
        page.keyboard.press("ArrowLeft")
        votes = wait_for_votes(study_db, "browser1", 2)
        assert votes[["question", "choice"]].values.tolist() == [["alignment", "right"], ["quality", "left"]]

        page.reload()  # a refresh resumes at the next unanswered question, from the database
        page.get_by_text("2 of").first.wait_for(timeout=30_000)
        page.get_by_text("Question 1 of 2").wait_for(timeout=30_000)

        # A phone: the two images stay side by side, both fully on screen, with neutral alt text.
        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        phone.goto(f"{served_app}/?annotator=phone1")
        phone.get_by_text("Question 1 of 2").wait_for(timeout=60_000)
        images = phone.get_by_role("img", name=re.compile("^(left|right) image$"))
        images.nth(1).wait_for(timeout=30_000)
        assert [images.nth(i).get_attribute("alt") for i in range(2)] == ["left image", "right image"]
        left, right = (images.nth(i).bounding_box() for i in range(2))
        assert abs(left["y"] - right["y"]) < 2 and left["x"] + left["width"] <= right["x"]  # one row
        assert right["x"] + right["width"] <= 390 and left["width"] > 100  # both in view, not thumbnails
        browser.close()
    assert screenshot.stat().st_size > 10_000
