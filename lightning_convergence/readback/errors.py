"""The one error the ``report`` command turns into a one-line message and exit status 2."""

from __future__ import annotations


class RunFolderError(ValueError):
    """A path that cannot be reported on: missing, empty, or holding an unreadable report.

    The message always starts with the path, so the command line can print it as it is.

    Example:
        >>> str(RunFolderError("/no/such/dir: no such folder"))
        '/no/such/dir: no such folder'
    """
