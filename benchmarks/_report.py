"""Reporting helpers shared by the benchmarks: quiet Lightning, summary numbers, text and markdown tables.

Nothing here imports ``lightning_convergence`` or torch.
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
import warnings
from collections.abc import Sequence


def quiet_lightning() -> None:
    """Silence Lightning's info logs and the warnings a benchmark's small fits always trigger."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # short fits
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command as typed from the repository root, e.g. ``python benchmarks/x.py --quick``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", script, *(shlex.quote(a) for a in args)])


def finite_mean(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def finite_median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN when there are none)."""
    ordered = sorted(v for v in values if math.isfinite(v))
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def spread(values: Sequence[float], fmt: str) -> str:
    """``mean [min, max]`` of the finite values, with the count of non-finite ones, e.g. ``0.93 [0.90, 0.95]``."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "nan"
    text = f"{finite_mean(finite):{fmt}} [{min(finite):{fmt}}, {max(finite):{fmt}}]"
    return text if len(finite) == len(values) else f"{text} ({len(values) - len(finite)} nan)"


def markdown_table(rows: list[list[str]]) -> str:
    """``rows[0]`` is the header."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def text_table(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart; ``rows[0]`` is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
