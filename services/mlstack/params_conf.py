"""Reads a bundle part's ``params.conf`` (INI, one section per model), for the worker and the CLI."""

from __future__ import annotations

import configparser
from pathlib import Path


class ParamsConfError(Exception):
    """params.conf is missing, unreadable or names no model."""


def read_params_conf(part: Path) -> dict[str, dict[str, str]]:
    """Model name -> its settings, in file order."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep option names as written
    path = part / "params.conf"
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, configparser.Error) as exc:
        raise ParamsConfError(f"cannot read {path}: {exc}") from exc
    sections = {name: dict(parser[name]) for name in parser.sections()}
    if not sections:
        raise ParamsConfError(f"{path}: no model section")
    return sections
