"""The outcome-labelled calibration sweep: 7 architectures x 3 optimisers x 6 learning rates x 3
seeds, plus 6 implementation errors, each run labelled by its outcome and scored against what
``default_callbacks()`` said (``labels.py``).

Run from the repository root, with the venv active::

    python -m benchmarks.sweep                 # everything (about 420 runs): benchmarks/results/sweep.md
    python -m benchmarks.sweep --quick         # the CI subset: mlp and regression, SGD+momentum, 3 LRs, seed 0
    python -m benchmarks.sweep --archs mlp cnn --seeds 0 --out /tmp/sweep
    python -m benchmarks.sweep --remediate     # every run again with auto_remediate=True: helped / harmed
    python -m benchmarks.sweep --rescore /tmp/sweep/sweep.json   # the tables again from saved records
    python -m benchmarks.sweep --remediate --observed benchmarks/results/sweep_remedies.json
                                               # only the acting runs again, beside saved observed ones

The split into a tuning half and a held-out half is fixed in ``setups.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import BENCHMARKS, command_line, parser as make_parser, run_jobs
from benchmarks.sweep.setups import HELD_OUT, LR_GRID, SEEDS, TUNING, Job, jobs

QUICK = {"archs": ("mlp", "regression"), "optimizers": ("sgdm",), "seeds": (0,), "lrs_per_setup": 3}
COST = {"transformer": 4, "gru": 3, "rescnn": 3, "cnn": 2}  # the costliest start first


def parse_args(argv: Sequence[str] | None):
    p = make_parser(__doc__, prog="python -m benchmarks.sweep")
    p.add_argument("--quick", action="store_true", help="the CI subset")
    p.add_argument("--archs", nargs="+", choices=TUNING + HELD_OUT, default=None)
    p.add_argument("--optimizers", nargs="+", choices=tuple(LR_GRID), default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help=f"default {' '.join(map(str, SEEDS))}")
    p.add_argument("--no-errors", action="store_true", help="leave out the injected implementation errors")
    p.add_argument("--remediate", action="store_true",
                   help="run every run again with the suite acting (auto_remediate=True) and score the remedies")
    p.add_argument("--max-steps", type=int, default=-1, help="cap every run (a smoke test, not a result)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel")
    p.add_argument("--out", type=Path, default=None, help="folder for sweep.md and sweep.json "
                                                          "(default: benchmarks/results)")
    p.add_argument("--rescore", type=Path, default=None, help="re-write the tables from this sweep.json")
    p.add_argument("--observed", type=Path, default=None,
                   help="with --remediate: take the observed runs from this sweep.json instead of running them "
                        "again (an observing suite leaves training bit-identical, so their outcomes are the same; "
                        "their diagnoses are those of the commit that made them)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.observed is not None and not args.remediate:
        p.error("--observed needs --remediate")
    if args.observed is not None and not args.observed.is_file():
        p.error(f"--observed: no such file {args.observed}")
    return args


def selected(args) -> list[Job]:
    spec = dict(QUICK) if args.quick else {"archs": TUNING + HELD_OUT, "optimizers": tuple(LR_GRID),
                                           "seeds": SEEDS, "lrs_per_setup": None}
    for key in ("archs", "optimizers", "seeds"):
        if getattr(args, key):
            spec[key] = tuple(getattr(args, key))
    return jobs(**spec, errors=not args.no_errors, remediate=args.remediate)


def observed_records(path: Path, work: list[Job]) -> list[dict]:
    """The observed runs of ``work`` from a saved sweep.json; every one must be there."""
    saved = {(r["arch"], r["optimizer"], r["lr"], r["seed"], r["error"]): r
             for r in json.loads(path.read_text())["records"] if not r.get("remediate")}
    wanted = [(j.arch, j.optimizer, j.lr, j.seed, j.error) for j in work if not j.remediate]
    missing = [key for key in wanted if key not in saved]
    if missing:
        raise SystemExit(f"--observed {path}: {len(missing)} observed runs missing, e.g. {missing[0]}")
    return [saved[key] for key in wanted]


def run_all(work: list[Job], root: str, n_jobs: int, max_steps: int) -> list[dict]:
    """Every run, the costliest architectures first, ``n_jobs`` at a time."""
    from benchmarks.sweep.runner import fit_job

    work = sorted(work, key=lambda job: -COST.get(job.arch, 1))
    return run_jobs(fit_job, [(job, root, max_steps) for job in work], n_jobs, _progress)


def _progress(r: dict, done: int, total: int) -> None:
    serious = sorted({d["kind"] for d in r["diagnoses"] if d["severity"] != "info"})
    top = r["summary_causes"][0]["cause"] if r["summary_causes"] else "-"
    crash = f"  CRASH {r['crash']}" if r["crash"] else ""
    print(f"[{done:3d}/{total}] {r['arch']:11s} {r['optimizer']:5s} lr {r['lr']:<7g} {r['error'] or '':18s} "
          f"seed {r['seed']}  outcome {r['outcome']:9.4g}  {r['seconds']:5.1f} s  {', '.join(serious) or '-'}"
          f"  top: {top}{crash}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.sweep.report import write

    args = parse_args(argv)
    out = args.out or BENCHMARKS / "results"
    if args.rescore is not None:
        payload = json.loads(args.rescore.read_text())
        command = payload.get("command") if "environment" in payload else f"{payload['command']}; --rescore"
        print(write(payload["records"], out / "sweep.md", command, payload["wall_s"], payload.get("environment")))
        return 0
    work = selected(args)
    saved = observed_records(args.observed, work) if args.observed is not None else []
    if saved:
        work = [job for job in work if job.remediate]
    began = time.perf_counter()
    root = tempfile.mkdtemp(prefix="convergence_sweep_")
    try:
        records = saved + run_all(work, root, args.jobs, args.max_steps)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - began
    print(write(records, out / "sweep.md", command_line("-m benchmarks.sweep", args.argv), wall))
    print(f"wall time {wall:.0f} s; wrote {out / 'sweep.md'} and {out / 'sweep.json'}")
    return 0
