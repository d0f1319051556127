"""The evaluation report (`python -m bench.report`): a human preference study and/or run folders, as HTML + Markdown.

    statistics  win rates, Bradley–Terry, agreement, annotator filters: pure functions over a votes DataFrame
    charts      matplotlib figures from tidy tables
    sections    the report's content model (sections of text, tables, figures, image cards) and its options
    study       sections of a human preference study (read from the study database)
    runs        sections of run folders (metrics, per-category CLIP, scaling, editing, inpainting, samples)
    render      index.html and summary.md from the jinja2 templates in templates/
    publish     assembles a report in a staging folder and moves it into place only when complete
    __main__    the command line
"""
