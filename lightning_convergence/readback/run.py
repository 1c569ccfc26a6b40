"""One run, loaded: where it is, its report (when the suite watched it) and its scalars."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lightning_convergence import tags
from lightning_convergence.recorder.run_log import REPORT_FILENAME
from lightning_convergence.readback.discovery import find_run_folders
from lightning_convergence.readback.report_file import read_report
from lightning_convergence.readback.scalars import Series, read_scalars

NOT_WATCHED = "no convergence report: this run was not watched by lightning-convergence callbacks"
# Lightning's own bookkeeping tags: the epoch counter and TensorBoardLogger's placeholder metric.
LIGHTNING_TAGS = ("epoch", "hp_metric")


@dataclass(frozen=True)
class Run:
    """A run folder's contents.

    Args:
        path: the run folder.
        name: the folder relative to the path the user gave (that path's own name when it is
            the run).
        report: the parsed ``convergence_report.json``; ``None`` when the suite did not watch
            the run.
        scalars: every TensorBoard scalar tag, as ``(step, value)`` pairs sorted by step.

    Example:
        >>> run = Run("/logs/v0", "v0", None, {"train_loss": [(0, 2.3), (9, 0.4)], "hp_metric": [(0, -1.0)]})
        >>> run.watched, run.last_values()
        (False, {'train_loss': (9, 0.4)})
    """

    path: str
    name: str
    report: dict[str, Any] | None
    scalars: dict[str, Series] = field(default_factory=dict)

    @property
    def watched(self) -> bool:
        """Whether the suite watched this run (it left a report)."""
        return self.report is not None

    @property
    def headline(self) -> str:
        """The report's one-sentence summary, or why there is none."""
        return self.report["summary"]["headline"] if self.report is not None else NOT_WATCHED

    def last_values(self) -> dict[str, tuple[int, float]]:
        """The user's own scalars (not the suite's, not Lightning's bookkeeping) at their last step.

        A final NaN is given as NaN: that is how the run ended.
        """
        values = {}
        for tag, series in self.scalars.items():
            if tags.is_suite_tag(tag) or tag in LIGHTNING_TAGS or not series:
                continue
            values[tag] = series[-1]
        return values


def _display_name(logdir: str, folder: str) -> str:
    relative = os.path.relpath(folder, logdir)
    return os.path.basename(os.path.abspath(logdir)) if relative == os.curdir else relative


def load_run(folder: str, name: str | None = None) -> Run:
    """Load one run folder.

    Args:
        folder: a run folder (see :func:`~lightning_convergence.readback.find_run_folders`).
        name: how to call it; its folder name when not given.

    Raises:
        RunFolderError: its report is unreadable or of another version.
    """
    report_path = os.path.join(folder, REPORT_FILENAME)
    report = read_report(report_path) if os.path.isfile(report_path) else None
    return Run(folder, name or os.path.basename(os.path.abspath(folder)), report, read_scalars(folder))


def load_runs(logdir: str) -> list[Run]:
    """Every run at or below ``logdir``, named relative to it.

    Raises:
        RunFolderError: ``logdir`` is missing or holds no run, or a report is unreadable (all
            runs are checked before any is returned, so nothing is half-reported).
    """
    return [load_run(folder, _display_name(logdir, folder)) for folder in find_run_folders(logdir)]
