"""Reading ``convergence_report.json`` back, with errors that say what is wrong with the file."""

from __future__ import annotations

import json
from typing import Any

from lightning_convergence.recorder.run_log import REPORT_VERSION
from lightning_convergence.readback.errors import RunFolderError

_DIAGNOSIS_KEYS = ("kind", "severity", "step", "message")
_INTERVENTION_KEYS = ("action", "step")


def _check_entries(path: str, report: dict[str, Any], key: str, required: tuple[str, ...]) -> None:
    entries = report.get(key)
    if not isinstance(entries, list):
        raise RunFolderError(f"{path}: not a convergence report: `{key}` must be a list, got {entries!r}")
    for index, entry in enumerate(entries):
        missing = [name for name in required if not isinstance(entry, dict) or name not in entry]
        if missing:
            raise RunFolderError(f"{path}: not a convergence report: {key}[{index}] lacks {missing}")


def read_report(path: str) -> dict[str, Any]:
    """The report at ``path`` as plain data, after checking its version and shape.

    Only the fields the command shows are required (a diagnosis's ``kind``, ``severity``,
    ``step`` and ``message``; an intervention's ``action`` and ``step``; the summary's
    ``headline``); any others are kept as they are.

    Args:
        path: a ``convergence_report.json``.

    Raises:
        RunFolderError: the file cannot be read, is not valid JSON, is of another schema
            version than :data:`~lightning_convergence.recorder.run_log.REPORT_VERSION`, or lacks
            a required field.

    Example:
        >>> import os, tempfile
        >>> from lightning_convergence.recorder import ConvergenceLog
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     report = read_report(ConvergenceLog().write_json(folder, steps=3))
        >>> report["summary"]["headline"]
        'Healthy: no warnings in 3 optimizer steps.'
    """
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path}: corrupt report, invalid JSON: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: cannot read the report: {error}") from None
    if not isinstance(report, dict):
        raise RunFolderError(f"{path}: not a convergence report: expected a JSON object, got {type(report).__name__}")
    version = report.get("version")
    if version != REPORT_VERSION or isinstance(version, bool):
        raise RunFolderError(
            f"{path}: report version {version!r} found; this lightning-convergence reads version "
            f"{REPORT_VERSION} only"
        )
    _check_entries(path, report, "diagnoses", _DIAGNOSIS_KEYS)
    _check_entries(path, report, "interventions", _INTERVENTION_KEYS)
    summary = report.get("summary")
    if not isinstance(summary, dict) or "headline" not in summary:
        raise RunFolderError(f"{path}: not a convergence report: `summary` must be an object with a `headline`")
    return report
