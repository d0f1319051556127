"""The report's content model: sections of blocks that the templates render to HTML and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# The folders next to index.html that figures and copied images go to; the templates link into them.
FIGURES_DIR, IMAGES_DIR = "figures", "pairs"


@dataclass(frozen=True)
class Options:
    """Report settings (the command's options); the defaults are the command's defaults."""

    bootstrap: int = 2000  # resamples for win-rate intervals
    bt_bootstrap: int = 400  # refits for Bradley–Terry intervals
    seed: int = 0
    pairs: int = 6  # sample pairs / prompts shown in index.html
    image_root: str | None = None  # overrides the study's recorded image root
    min_gold_accuracy: float = 0.5
    min_seconds: float = 1.0
    max_side_share: float = 0.9


@dataclass
class Block:
    kind: str  # "text" (inline Markdown), "table" (DataFrame), "figure" (chart path), "cards" (list of Card)
    value: object


@dataclass
class Picture:
    """One image of a card: `src` relative to index.html, or None when the image file was not found."""

    src: str | None
    caption: list[str]


@dataclass
class Card:
    """Images shown side by side under their prompt (HTML only)."""

    prompt: str
    pictures: list[Picture]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, value: str) -> Section:
        self.blocks.append(Block("text", value))
        return self

    def table(self, frame: pd.DataFrame) -> Section:
        self.blocks.append(Block("table", frame))
        return self

    def figure(self, path: Path) -> Section:
        self.blocks.append(Block("figure", path))
        return self

    def cards(self, cards: list[Card]) -> Section:
        self.blocks.append(Block("cards", cards))
        return self
