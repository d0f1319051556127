"""Prompt files, read one way by every command that takes them (`ladd.synth --prompts`, `bench.run --prompts`).

A prompt file is either text, one prompt a line, or a CSV with a `prompt` column; any other columns (`category`,
`width`, `height`, `image`, ...) come along as text. Files are UTF-8 (a byte-order mark is allowed). Anything
unreadable is a `LaddError` naming the file and what is wrong, never a parser traceback.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from ladd.cli import LaddError


def read_text(path: Path) -> str:
    """The file's text as UTF-8 (BOM stripped); a LaddError names the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LaddError(f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                        "re-save it as UTF-8") from None


def read_prompt_file(path: str | Path) -> pd.DataFrame:
    """The prompts of a .txt (one a line) or .csv (a `prompt` column) file, blank prompts dropped, all columns str."""
    path = Path(path)
    if not path.is_file():
        raise LaddError(f"prompt file {path} not found")
    text = read_text(path)
    if path.suffix.lower() == ".csv":
        if not text.strip():
            raise LaddError(f"{path} is empty (a CSV with a 'prompt' column is expected)")
        try:
            table = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str)
        except (pd.errors.ParserError, csv.Error) as error:
            raise LaddError(f"{path} is not a readable CSV ({' '.join(str(error).split())})") from None
        if "prompt" not in table.columns:
            raise LaddError(f"{path} has no 'prompt' column (columns: {', '.join(map(str, table.columns))})")
        table = table[table["prompt"].str.strip() != ""].reset_index(drop=True)
    else:
        table = pd.DataFrame({"prompt": [line.strip() for line in text.splitlines() if line.strip()]})
    if table.empty:
        raise LaddError(f"no prompts in {path}")
    return table
