"""The report's jinja2 templates: shipped in the wheel, and autoescaping whatever text the runs and studies carry."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

from bench.report.render import render_html, render_markdown
from bench.report.sections import Card, Picture, Section

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "bench" / "report" / "templates"


def test_a_built_wheel_carries_every_template(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for package in ("ladd", "bench", "annotate"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(p.relative_to(REPO).as_posix() for p in TEMPLATES.glob("*.j2"))
    assert templates and set(templates) <= shipped


def test_text_from_runs_and_studies_is_escaped_in_html_only():
    sections = [Section("Runs <&>").text("model **a<b** on `x&y`").table(pd.DataFrame({"run": ["<i>r</i>"]}))
                .cards([Card("a <script>alert(1)</script> prompt", [Picture("pairs/x.png", ["m<1>", "2 vote(s)"]),
                                                                    Picture(None, ["image not found: /a<b>.png"])])])]
    page = render_html(sections, "T")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>a&lt;b</b>" in page and "<code>x&amp;y</code>" in page and "&lt;i&gt;r&lt;/i&gt;" in page
    assert "<figcaption>m&lt;1&gt;<br>2 vote(s)</figcaption>" in page
    assert "<div class='missing'>image not found: /a&lt;b&gt;.png</div>" in page
    summary = render_markdown(sections, "T")
    assert summary == "# T\n\n## Runs <&>\n\nmodel **a<b** on `x&y`\n\n| run |\n|---|\n| <i>r</i> |\n"
