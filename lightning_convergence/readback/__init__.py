"""``lightning-convergence report``: read a finished run back and explain it.

A run folder holds ``convergence_report.json`` (written by the suite), TensorBoard event files,
or both. This package finds the run folders below a path, loads each one, and renders it as a
timeline of diagnoses and interventions (text, markdown or JSON) and as one PNG figure of the
curves that exist.

Nothing here imports Lightning: a report can be read on a machine that only has the logs.
"""

from lightning_convergence.readback.discovery import find_run_folders
from lightning_convergence.readback.errors import RunFolderError
from lightning_convergence.readback.report_file import read_report
from lightning_convergence.readback.run import Run, load_run, load_runs
from lightning_convergence.readback.scalars import read_scalars
from lightning_convergence.readback.timeline import TimelineRow, build_timeline

__all__ = [
    "Run",
    "RunFolderError",
    "TimelineRow",
    "build_timeline",
    "find_run_folders",
    "load_run",
    "load_runs",
    "read_report",
    "read_scalars",
]
