"""The suite's hook time at two commits, in alternating fits: a paired before/after of one change.

Run from the repository root, with the venv active::

    git worktree add /tmp/before <commit>            # the commit to compare with, checked out apart
    python benchmarks/overhead_ab.py /tmp/before .   # suite at defaults, three models, 6 pairs (4 min)
    python benchmarks/overhead_ab.py /tmp/before . --variant suite_acting --models cnn --pairs 4

Why. The floor of ``overhead.py`` (one read of every gradient) moves by 10-20% between runs on a
shared machine (its MLP floor was 1.27, 1.55 and 1.70 ms per step in three runs of one day), so
ratios from two separate runs cannot show a change of that size. Here each pair runs the same
fit (``overhead.run_fit``: the same model, variant and timed window) once from each checkout, in a
fresh process whose working directory is that checkout (so it imports that checkout's package),
the order alternating between pairs. Reported per model: the median steady hook ms (window mean
without the one-off early steps) and every-step hook ms of each side, and the per-pair ratio
after / before, whose spread is the noise.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import parser  # noqa: E402
from benchmarks.overhead import VARIANTS  # noqa: E402
from benchmarks.overhead_models import MODELS  # noqa: E402

_ONE_SIDE = r"""
import json, sys
sys.path.insert(0, ".")
import torch
from benchmarks import overhead
from benchmarks.harness import quiet_lightning
quiet_lightning()
torch.set_num_threads(int(sys.argv[3]))
fit = overhead.run_fit(sys.argv[1], sys.argv[2], 50)
print("RESULT " + json.dumps([fit.hook_ms(steady=True), fit.every_step_ms()]))
"""


def one_fit(checkout: str, model: str, variant: str, threads: int) -> tuple[float, float]:
    """``(steady hook ms, every-step hook ms)`` of one fit run from ``checkout``.

    Raises:
        RuntimeError: the fit did not print its result (its stderr's end is in the message).
    """
    done = subprocess.run([sys.executable, "-c", _ONE_SIDE, model, variant, str(threads)], cwd=checkout,
                          capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"the fit from {checkout!r} ({model}, {variant}) gave no result:\n{done.stderr[-2000:]}")
    steady, every = json.loads(lines[-1][len("RESULT "):])
    return steady, every


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__, prog="python benchmarks/overhead_ab.py")
    p.add_argument("before", help="checkout of the commit to compare with (a git worktree)")
    p.add_argument("after", help="checkout of the commit under test (default use: .)")
    p.add_argument("--models", default="mlp,cnn,transformer", help="comma-separated (default: all three)")
    p.add_argument("--variant", default="suite", help="an overhead.py variant (default: suite)")
    p.add_argument("--pairs", type=int, default=6, help="pairs of fits per model (default 6)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each fit (default 2)")
    args = p.parse_args(argv)
    for name in ("before", "after"):
        if not os.path.isfile(os.path.join(getattr(args, name), "benchmarks", "overhead.py")):
            p.error(f"`{name}` must be a checkout of this repository, got {getattr(args, name)!r}")
    if args.pairs < 1:
        p.error(f"`--pairs` must be at least 1, got {args.pairs}")
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if not models or unknown:
        p.error(f"`--models` must be a comma-separated subset of {','.join(MODELS)}, got {args.models!r}")
    if args.variant not in VARIANTS or args.variant == "bare":  # bare has no hooks to time
        p.error(f"`--variant` must be one of {', '.join(v for v in VARIANTS if v != 'bare')}, got {args.variant!r}")
    for model in models:
        pairs = []
        for index in range(args.pairs):
            order = ("before", "after") if index % 2 == 0 else ("after", "before")
            result = {side: one_fit(getattr(args, side), model, args.variant, args.threads) for side in order}
            pairs.append((result["before"], result["after"]))
        ratios = [after[0] / before[0] for before, after in pairs]
        steady = [statistics.median(side[0] for side in sides) for sides in zip(*pairs)]  # before, after
        every = [statistics.median(side[1] for side in sides) for sides in zip(*pairs)]
        print(f"{model} {args.variant}: steady hook ms {steady[0]:.3f} -> {steady[1]:.3f}, every step "
              f"{every[0]:.3f} -> {every[1]:.3f}; after/before per pair "
              f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
