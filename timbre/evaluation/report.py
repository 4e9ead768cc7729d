"""The one report writer of every evaluation: a JSON file of numbers beside a Markdown file for people.

:func:`write_report` writes both atomically (a crash leaves the previous files); :func:`json_ready`
turns numpy numbers and non-finite values into plain JSON; :func:`markdown_table`, :func:`percent`
and :func:`number` format the tables; :func:`report_excerpt` gives a report's Markdown without its
title and pictures, for a model card to paste under its own heading.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from timbre.io.files import atomic_write

__all__ = ["json_ready", "markdown_table", "number", "percent", "report_excerpt", "write_report"]


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON types: numpy numbers become Python numbers, NaN and infinity None."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def write_report(out_dir: str | os.PathLike, stem: str, report: dict[str, Any], markdown: str) -> dict[str, Any]:
    """Write ``out_dir/<stem>.json`` (``report``, JSON-ready) and ``out_dir/<stem>.md`` (``markdown``).

    Returns:
        The report as written (after :func:`json_ready`).
    """
    out_dir = Path(out_dir)
    report = json_ready(report)
    with atomic_write(out_dir / f"{stem}.json", "w") as file:
        json.dump(report, file, indent=2, allow_nan=False)
        file.write("\n")
    with atomic_write(out_dir / f"{stem}.md", "w") as file:
        file.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return report


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; every row has as many cells as ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, or ``n/a``."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def report_excerpt(markdown: str | os.PathLike) -> str:
    """A report's Markdown (text, or the path of a ``.md`` file) without its ``# `` title and pictures.

    What a model card pastes under its own heading: the tables and the text stay, the pictures
    stay with the report they belong to.
    """
    text = Path(markdown).read_text() if isinstance(markdown, os.PathLike) else markdown
    lines = [line for line in text.splitlines() if not line.startswith("# ") and not line.startswith("![")]
    return "\n".join(lines).strip() + "\n"
