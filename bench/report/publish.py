"""Building a report: assembled in a staging folder next to `out` and moved in only when complete, so a failure
(bad input found late, a chart that cannot be drawn, a full disk) never leaves a half-written report behind."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.report.findings import finding_sections
from bench.report.render import render_html, render_markdown
from bench.report.runs import run_sections
from bench.report.sections import FIGURES_DIR, IMAGES_DIR, Options
from bench.report.study import Study, human_sections
from bench.runfolder import Run

OUTPUTS = ("index.html", "summary.md")


def publish(staging: Path, out: Path) -> None:
    """Move the finished report into `out`, replacing only the files and folders it writes."""
    out.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(item), str(target))


def build_report(study: Study | None, runs: list[Run], out: Path, options: Options = Options(),
                 findings: dict | None = None) -> Path:
    """`findings`: the tables `bench.report.findings.load_findings` read (read before anything is written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        figures, images = staging / FIGURES_DIR, staging / IMAGES_DIR
        figures.mkdir()
        images.mkdir()
        sections = []
        if study is not None:
            sections += human_sections(study, figures, images, options)
        if runs:
            sections += run_sections(runs, figures, images, options)
        if findings:
            sections += finding_sections(findings, figures)
        html_name, markdown_name = OUTPUTS
        (staging / html_name).write_text(render_html(sections), encoding="utf-8")
        (staging / markdown_name).write_text(render_markdown(sections), encoding="utf-8")
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
