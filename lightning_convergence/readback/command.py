"""``lightning-convergence report LOGDIR``: load every run, draw its figure, print the document."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from lightning_convergence.readback.errors import RunFolderError
from lightning_convergence.readback.formats import FORMATS, Format, render
from lightning_convergence.readback.plots import FIGURE_FILENAME, write_figure
from lightning_convergence.readback.run import Run, load_runs

EXIT_OK = 0
EXIT_ERROR = 2  # argparse's status for a bad command line; a bad LOGDIR is one


def figure_path(run: Run, out: str | None) -> str:
    """Where ``run``'s figure goes: its own folder, or ``out`` named after the run.

    Example:
        >>> run = Run("/logs/demo/with_suite/version_0", "with_suite/version_0", None)
        >>> figure_path(run, None)
        '/logs/demo/with_suite/version_0/convergence_plots.png'
        >>> figure_path(run, "/tmp/figures")
        '/tmp/figures/with_suite-version_0.png'
    """
    if out is None:
        return os.path.join(run.path, FIGURE_FILENAME)
    return os.path.join(out, run.name.replace(os.sep, "-") + ".png")


def report_command(logdir: str, format: Format = "text", out: str | None = None,
                   stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Report every run at or below ``logdir``; return the exit status.

    All runs are loaded before anything is printed or drawn, so a bad report anywhere gives one
    error line on ``stderr`` and status 2, and no partial output.

    Args:
        logdir: a run folder, or a folder holding several.
        format: ``"text"``, ``"markdown"`` or ``"json"`` (figure paths are in the document).
        out: folder for the figures; ``None`` writes each into its run folder.
        stdout: where the document goes (``sys.stdout`` when not given).
        stderr: where an error line goes (``sys.stderr`` when not given).

    Raises:
        ValueError: an unknown ``format``.

    Example:
        >>> import io
        >>> errors = io.StringIO()
        >>> report_command("/no/such/dir", stderr=errors), errors.getvalue()
        (2, 'lightning-convergence report: error: /no/such/dir: no such folder\\n')
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}.")
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        runs = load_runs(logdir)
        plots = {}
        for run in runs:
            path = figure_path(run, out)
            try:
                plots[run.path] = write_figure(run, path)
            except OSError as error:
                raise RunFolderError(f"{path}: cannot write the figure: {error}") from None
    except RunFolderError as error:
        print(f"lightning-convergence report: error: {error}", file=stderr)
        return EXIT_ERROR
    print(render(runs, plots, format), file=stdout)
    return EXIT_OK
