"""Configuration is plain data: a TOML file, overridden from the command line with `section.key=value`."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any


def parse_value(text: str) -> Any:
    """Read an override value as TOML (numbers, booleans, lists, quoted strings); anything else is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Return a copy of `config` with each `dotted.key=value` applied; unknown keys are an error (typos)."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form key=value")
        *parents, leaf = key.strip().split(".")
        node = config
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown config section {part!r} in override {item!r}")
            node = node[part]
        if leaf not in node:
            known = ", ".join(sorted(node))
            raise ValueError(f"unknown config key {key!r} (known here: {known})")
        node[leaf] = parse_value(value.strip())
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with path.open("rb") as f:
        config = tomllib.load(f)
    return apply_overrides(config, list(overrides))
