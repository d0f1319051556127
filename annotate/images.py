"""The study's images as the app shows them: read, checked to decode, or named as missing/damaged.

An item is votable only when both of its images can be shown, so a vote is never recorded on an image nobody saw
(`annotate.app`); `study create` decodes every image before writing a study and `study info` and the admin page
list those that went missing or were damaged since.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.runfolder import decode_problem


def read_image(root: str | Path, relative: str) -> tuple[bytes | None, str | None]:
    """(the file's bytes, None) when the image decodes, else (None, what is wrong)."""
    try:
        data = (Path(root) / relative).read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as error:
        return None, f"unreadable: {error.strerror or error}"
    problem = decode_problem(data)
    return (None, problem) if problem else (data, None)


def image_problems(root: str | Path, relatives, workers: int | None = None) -> list[tuple[str, str]]:
    """(relative path, what is wrong) for each image under `root` that is missing or does not decode, in the
    given order. Decoding runs on threads (Pillow releases the GIL while it decodes)."""
    unique = list(dict.fromkeys(relatives))
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(lambda relative: decode_problem(Path(root) / relative), unique))
    return [(relative, problem) for relative, problem in zip(unique, problems) if problem]
