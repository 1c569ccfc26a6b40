"""The calibration sweep: runs labelled by their outcome, scored against what the suite said.

``python -m benchmarks.sweep`` (see ``run.py``) writes ``benchmarks/results/sweep.md`` and
``sweep.json``. Modules: ``setups`` (the grid, the held-out split, the injected errors), ``models``
and ``data`` (seven architectures on bundled data, the errors), ``runner`` (one run), ``labels``
(outcome labels and scores) and ``report`` (the tables).
"""
