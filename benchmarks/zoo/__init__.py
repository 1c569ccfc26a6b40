"""The convergence zoo: faulty and healthy training runs, scored on what the suite diagnoses and fixes.

``python -m benchmarks.zoo`` (see ``run.py``) regenerates ``benchmarks/RESULTS.md`` and
``benchmarks/results/zoo.png``. Modules: ``scenarios`` (what is run, each fault's onset and the kinds
that count as a hit), ``models`` and ``data`` (small models, the digits with faults, a synthetic
sequence task), ``runner`` (one run), ``scoring`` (hits, latency, false alarms, recovery) and
``report`` (the markdown and the figure).
"""
