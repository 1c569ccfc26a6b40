"""How many Python function calls the suite adds to a training step, everything included.

``step_ops.py`` counts the torch operations of the hooks; this counts the Python around them,
and not only inside the hooks: Lightning reads every callback's ``state_key`` for every hook
call, enters the Trainer's profiler for each, and calls a module's forward hooks on every
forward. The overhead benchmark's hook time does not see those costs; the step time does, but
on a shared 2-core machine its noise is larger than they are. The number of calls does not
depend on load, so it is what a change to the Python around the hooks is judged by. Each call
costs from about 0.05 us (a C builtin) to a few us (a Python function).

Method: ``cProfile`` over a whole real ``Trainer.fit`` of ``STEPS`` steps of the overhead
benchmark's model (a ``TensorBoardLogger``, logging every 50 steps, so the logging steps are in
the count), for ``bare`` and each variant, after one uncounted fit that pays the process's
one-off imports; the table gives calls per step and their excess over
``bare``, and the functions the excess is made of.

Run from the repository root, with the venv active (about 5 minutes on 2 cores)::

    python benchmarks/step_calls.py
    python benchmarks/step_calls.py --models cnn --out /tmp/calls
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from benchmarks.harness import (BENCHMARKS, command_line, environment, environment_line,  # noqa: E402
                                markdown_table, parser, quiet_lightning, write_results)
from benchmarks.overhead_models import MODELS, make_loader, make_task  # noqa: E402
from lightning_convergence import default_callbacks  # noqa: E402

STEPS, LOG_EVERY = 100, 50
VARIANTS = {
    "bare": lambda: [],
    "suite": lambda: default_callbacks(),
    "suite_acting": lambda: default_callbacks(auto_remediate=True),
}


def calls_per_function(model: str, variant: str, steps: int = STEPS) -> dict[str, float]:
    """Calls per optimizer step of every function ``cProfile`` saw in a fit of ``steps`` steps."""
    with tempfile.TemporaryDirectory(prefix="step_calls_") as root:
        trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=TensorBoardLogger(root),
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            log_every_n_steps=LOG_EVERY, default_root_dir=root, callbacks=VARIANTS[variant]())
        task, loader = make_task(model), make_loader(model, steps)
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            trainer.fit(task, loader)
        finally:
            profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {_where(key): row[1] / steps for key, row in stats.items()}


_STDLIB = sysconfig.get_paths()["stdlib"] + "/"


def _where(key: tuple[str, int, str]) -> str:
    path, line, name = key
    short = path.split("site-packages/")[-1].replace(os.getcwd() + "/", "").replace(_STDLIB, "")
    return f"{short}:{line}({name})" if path != "~" else name.strip("<>")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__, prog="python benchmarks/step_calls.py")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "cnn", "transformer"])
    p.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per fit (default %(default)s)")
    p.add_argument("--out", type=Path, default=BENCHMARKS / "results")
    args = p.parse_args(argv)
    quiet_lightning()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows = [["model", "variant", "Python calls per step", "over bare", "most of the excess (calls per step)"]]
    payload: dict[str, dict] = {}
    # Once, uncounted: the first fit in a process pays one-off imports and compilations (enums,
    # regular expressions, the TensorBoard writer), which would be charged to whichever ran first.
    calls_per_function(args.models[0], "suite_acting", steps=2)
    for model in args.models:
        counted = {variant: calls_per_function(model, variant, args.steps) for variant in VARIANTS}
        bare = counted["bare"]
        for variant, calls in counted.items():
            total = sum(calls.values())
            excess = {name: n - bare.get(name, 0.0) for name, n in calls.items()}
            top = sorted(excess.items(), key=lambda kv: -kv[1])[:4] if variant != "bare" else []
            rows.append([model, f"`{variant}`", f"{total:.0f}", f"{total - sum(bare.values()):+.0f}",
                         "; ".join(f"`{name}` {n:.0f}" for name, n in top) or "-"])
            payload[f"{model}/{variant}"] = {"per_step": total, "over_bare": total - sum(bare.values()),
                                             "top_excess": dict(top)}
    env = environment()
    command = command_line("benchmarks/step_calls.py", argv if argv is not None else sys.argv[1:])
    generated = [f"Command: `{command}`", "", environment_line(env), "",
                 f"Python function calls per optimizer step over a whole `Trainer.fit` of {args.steps} steps "
                 f"(`cProfile`; logging every {LOG_EVERY} steps), builtins included.", "", markdown_table(rows)]
    write_results(args.out / "step_calls.md", "Python calls per training step", generated,
                  {"environment": env, "command": command, "steps": args.steps, "variants": payload})
    print("\n".join(generated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
