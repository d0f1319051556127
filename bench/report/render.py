"""index.html and summary.md from the sections, through the jinja2 templates shipped in `templates/`.

HTML is autoescaped: every prompt, model name and path is text, never markup. Markdown shows tables and charts;
image cards are HTML only.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from bench.report.sections import FIGURES_DIR, Section

TITLE = "LADD evaluation report"


def inline_markdown(text: str) -> Markup:
    """The two inline marks the section texts use, **bold** and `code`, as HTML; everything else escaped."""
    escaped = str(escape(text))
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", escaped))


def html_table(frame: pd.DataFrame) -> Markup:
    return Markup(frame.to_html(index=False, border=0, na_rep="–", float_format=lambda x: f"{x:.4g}"))


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if np.isfinite(value) else "–"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("bench.report", "templates"), undefined=StrictUndefined,
                              autoescape=lambda name: name is not None and name.endswith(".html.j2"),
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    environment.filters.update(inline_markdown=inline_markdown, html_table=html_table, markdown_table=markdown_table)
    environment.globals.update(figures_dir=FIGURES_DIR)
    return environment


def render_html(sections: list[Section], title: str = TITLE) -> str:
    return _environment().get_template("index.html.j2").render(sections=sections, title=title)


def render_markdown(sections: list[Section], title: str = TITLE) -> str:
    return _environment().get_template("summary.md.j2").render(sections=sections, title=title)
