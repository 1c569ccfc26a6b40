"""The runs as text, markdown or JSON: the same content in three shapes.

Each run gives its timeline (diagnoses and interventions by step, each diagnosis with what was seen
and its most likely cause), the run's likely causes, the last values of the user's own scalars, the
report's headline and the figure written for it.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping
from typing import Any, Literal

from lightning_convergence.readback.run import NOT_WATCHED, Run
from lightning_convergence.readback.timeline import TimelineRow, build_timeline

Format = Literal["text", "markdown", "json"]
FORMATS: tuple[str, ...] = ("text", "markdown", "json")
HEADER = ("step", "severity/action", "kind / source", "layer", "likely cause", "what")
_TEXT_WIDTH = 110  # of the "what" column in text output
NO_PLOT = "none (no loss, gradient norm, dead unit, clipping or learning rate scalars in this run)"


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _cells(row: TimelineRow) -> tuple[str, ...]:
    level = row.level.upper() if row.event == "diagnosis" else row.level
    return str(row.step), level, row.kind, row.layer or "-", row.cause or "-", row.text


def _last_values_line(run: Run) -> str:
    values = run.last_values()
    if not values:
        return "Last values: none logged"
    return "Last values: " + ", ".join(f"{tag} {_number(v)} (step {s})" for tag, (s, v) in values.items())


def _counts(report: dict[str, Any]) -> str:
    d, i = len(report["diagnoses"]), len(report["interventions"])
    return f"{d} diagnos{'is' if d == 1 else 'es'}, {i} intervention{'' if i == 1 else 's'}"


def _causes_line(report: dict[str, Any]) -> str | None:
    """The run's likely causes from the summary (most likely first), or ``None`` when it names
    none (a healthy run, or a report written before causes were recorded)."""
    causes = (report.get("summary") or {}).get("causes") or []
    if not causes:
        return None
    named = ", ".join(f"{c['cause']} ({_number(float(c['confidence']))}, {len(c.get('diagnoses', []))}x)"
                      for c in causes)
    return f"Likely causes: {named}"


def _text_table(rows: list[TimelineRow]) -> str:
    last = len(HEADER) - 1
    table = [HEADER] + [_cells(r)[:last] + (textwrap.shorten(r.text, _TEXT_WIDTH, placeholder="..."),) for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(last)]
    lines = []
    for line in table:
        first = [line[0].rjust(widths[0])] + [cell.ljust(w) for cell, w in zip(line[1:last], widths[1:])]
        lines.append("  ".join([*first, line[last]]).rstrip())
    return "\n".join(lines)


def _text_run(run: Run, plot: str | None) -> str:
    lines = [f"== {run.name}  ({run.path})"]
    if run.report is None:
        lines.append(NOT_WATCHED)
    else:
        rows = build_timeline(run.report)
        lines.append(f"Timeline: {_counts(run.report)}")
        if rows:
            lines.append(_text_table(rows))
    lines.append(_last_values_line(run))
    if run.report is not None:
        lines.append(f"Summary: {run.headline}")
        causes = _causes_line(run.report)
        if causes:
            lines.append(causes)
    lines.append(f"Plot: {plot or NO_PLOT}")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_run(run: Run, plot: str | None) -> str:
    parts = [f"## `{run.name}`", f"Folder: `{run.path}`"]
    if run.report is None:
        parts.append(f"**{NOT_WATCHED}**")
    else:
        parts.append(f"**Summary:** {_md_cell(run.headline)}")
        causes = _causes_line(run.report)
        if causes:
            parts.append(f"**{causes.replace(': ', ':** ', 1)}")
        rows = build_timeline(run.report)
        if rows:
            table = ["| " + " | ".join(HEADER) + " |", "|---:" + "|---" * (len(HEADER) - 1) + "|"]
            table += ["| " + " | ".join(_md_cell(c) for c in _cells(r)) + " |" for r in rows]
            parts.append(f"Timeline ({_counts(run.report)}):\n\n" + "\n".join(table))
        else:
            parts.append("Timeline: no diagnoses, no interventions.")
    values = run.last_values()
    if values:
        table = ["| scalar | last value | step |", "|---|---:|---:|"]
        table += [f"| {_md_cell(tag)} | {_number(v)} | {s} |" for tag, (s, v) in values.items()]
        parts.append("Last values:\n\n" + "\n".join(table))
    parts.append(f"![{run.name}]({plot})" if plot else f"Plot: {NO_PLOT}.")
    return "\n\n".join(parts)


def _json_safe(value: Any) -> Any:
    """NaN/Inf become strings, the report's own rule (a report read with NaN tokens in it too)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def run_document(run: Run, plot: str | None) -> dict[str, Any]:
    """One run as plain JSON-ready data (the ``runs`` entries of the JSON format).

    ``diagnoses``, ``interventions`` and ``summary`` are the report's own, unchanged; they are
    empty (and ``summary`` is ``None``) for a run the suite did not watch.
    """
    report = run.report or {"diagnoses": [], "interventions": [], "summary": None}
    return {
        "name": run.name,
        "path": run.path,
        "watched": run.watched,
        "headline": run.headline,
        "timeline": [row.to_dict() for row in build_timeline(report)],
        "diagnoses": report["diagnoses"],
        "interventions": report["interventions"],
        "summary": report["summary"],
        "last_values": {tag: {"step": s, "value": v} for tag, (s, v) in run.last_values().items()},
        "scalar_tags": sorted(run.scalars),
        "plot": plot,
    }


def render(runs: list[Run], plots: Mapping[str, str | None], format: Format = "text") -> str:
    """All runs in one document.

    Args:
        runs: the loaded runs.
        plots: the figure written for each run, by run path (``None``: no figure).
        format: ``"text"`` (aligned columns), ``"markdown"`` (tables) or ``"json"``.

    Raises:
        ValueError: an unknown ``format``.

    Example:
        >>> run = Run("/logs/v0", "v0", None, {"train_loss": [(0, 2.3), (9, 0.41)]})
        >>> print(render([run], {"/logs/v0": "/logs/v0/convergence_plots.png"}))
        == v0  (/logs/v0)
        no convergence report: this run was not watched by lightning-convergence callbacks
        Last values: train_loss 0.41 (step 9)
        Plot: /logs/v0/convergence_plots.png
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}.")
    if format == "json":
        document = {"runs": [run_document(run, plots.get(run.path)) for run in runs]}
        return json.dumps(_json_safe(document), indent=2, allow_nan=False)
    if format == "markdown":
        return "\n\n".join(["# Convergence report"] + [_markdown_run(r, plots.get(r.path)) for r in runs])
    return "\n\n".join(_text_run(run, plots.get(run.path)) for run in runs)
