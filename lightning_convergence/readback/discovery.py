"""Finding the run folders below a path: every folder with a report or TensorBoard event files."""

from __future__ import annotations

import os

from lightning_convergence.recorder.run_log import REPORT_FILENAME
from lightning_convergence.readback.errors import RunFolderError

EVENT_FILE_PREFIX = "events.out.tfevents."


def is_run_folder(path: str) -> bool:
    """Whether ``path`` itself holds ``convergence_report.json`` or TensorBoard event files.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     empty = is_run_folder(folder)
        ...     open(os.path.join(folder, "events.out.tfevents.1.host"), "wb").close()
        ...     empty, is_run_folder(folder)
        (False, True)
    """
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(name == REPORT_FILENAME or name.startswith(EVENT_FILE_PREFIX) for name in names)


def find_run_folders(logdir: str) -> list[str]:
    """Every run folder at or below ``logdir``, in sorted path order.

    ``logdir`` may be one run (``lightning_logs/version_0``) or a folder of runs (the demo's
    ``OUT`` holds ``without_suite/version_0`` and ``with_suite/version_0``).

    Args:
        logdir: the folder to search.

    Raises:
        RunFolderError: ``logdir`` does not exist, is not a folder, or has no run below it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     for name in ("b/version_0", "a/version_0"):
        ...         os.makedirs(os.path.join(root, name))
        ...         open(os.path.join(root, name, REPORT_FILENAME), "w").close()
        ...     [os.path.relpath(p, root) for p in find_run_folders(root)]
        ['a/version_0', 'b/version_0']
    """
    if not os.path.exists(logdir):
        raise RunFolderError(f"{logdir}: no such folder")
    if not os.path.isdir(logdir):
        raise RunFolderError(f"{logdir}: is a file, not a folder; pass the run folder that holds it")
    runs = []
    for folder, subfolders, _ in os.walk(logdir):
        subfolders.sort()  # os.walk visits subfolders in this list's order
        if is_run_folder(folder):
            runs.append(folder)
    if not runs:
        raise RunFolderError(
            f"{logdir}: no {REPORT_FILENAME} and no TensorBoard event files ({EVENT_FILE_PREFIX}*) "
            "in this folder or below"
        )
    return sorted(runs)
