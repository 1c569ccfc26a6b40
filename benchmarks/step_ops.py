"""How many torch operations the suite's hooks launch on an ordinary training step.

Time on a busy 2-core machine is noise; the number of operations a hook dispatches is not. Each
small operation costs a few microseconds of dispatch on the CPU and one kernel launch on a GPU,
so this count is what "fewer small device ops per step" is measured by. ``torch.profiler``
records every top-level ``aten::`` operation the callbacks' ``on_before_optimizer_step`` hooks
dispatch (the hooks that run every step; the forward hooks of DeadNeuronTracker run on sampled
steps only) on steps 20 to 39 of a real ``Trainer.fit``, leaving out each logging step and the
step after it. The ``floor`` variant reads every gradient once (one ``sum`` per tensor).

Run from the repository root, with the venv active (about 1 minute)::

    python benchmarks/step_ops.py                  # the overhead benchmark's MLP
    python benchmarks/step_ops.py --models mlp cnn --out /tmp/ops
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.harness import (BENCHMARKS, command_line, environment, environment_line,  # noqa: E402
                                markdown_table, parser, quiet_lightning, write_results)
from benchmarks.overhead_models import MODELS, FloorPass, make_loader, make_task  # noqa: E402
from lightning_convergence import AutoClip, GradientNormMonitor, default_callbacks  # noqa: E402
from lightning_convergence.callbacks import registry  # noqa: E402

FIRST, LAST, LOG_EVERY = 20, 40, 50  # counted steps [FIRST, LAST); logging every LOG_EVERY
ACTING_CLIP = dict(registry.BY_NAME["AutoClip"].suite_args)
VARIANTS = {
    "floor": lambda: [FloorPass()],
    "monitor": lambda: [GradientNormMonitor()],
    "monitor+autoclip": lambda: [GradientNormMonitor(), AutoClip(**ACTING_CLIP)],
    "suite": lambda: default_callbacks(),
    "suite_acting": lambda: default_callbacks(auto_remediate=True),
}


class OpCounter:
    """Opens a profiler before the suite's ``on_before_optimizer_step`` hooks, closes it after."""

    def __init__(self, first: int = FIRST, last: int = LAST) -> None:
        self.first, self.last = first, last
        self.counts: Counter[str] = Counter()
        self.steps = 0
        self._profiler: profile | None = None

    def callbacks(self, suite: list[L.Callback]) -> list[L.Callback]:
        counter = self

        class Open(L.Callback):
            def on_before_optimizer_step(self, trainer: L.Trainer, *_: Any) -> None:
                step = trainer.global_step
                if counter.first <= step < counter.last and step % LOG_EVERY not in (0, LOG_EVERY - 1):
                    counter._profiler = profile(activities=[ProfilerActivity.CPU])
                    counter._profiler.__enter__()

        class Close(L.Callback):
            def on_before_optimizer_step(self, *_: Any) -> None:
                counter.close()

        return [Open(), *suite, Close()]

    def close(self) -> None:
        if self._profiler is None:
            return
        self._profiler.__exit__(None, None, None)
        self.counts.update(e.name for e in self._profiler.events()
                           if e.name.startswith("aten::") and e.cpu_parent is None)
        self.steps += 1
        self._profiler = None

    def per_step(self) -> float:
        return sum(self.counts.values()) / max(self.steps, 1)


def count(model: str, variant: str, first: int = FIRST, last: int = LAST) -> OpCounter:
    """Count the ops of ``variant``'s hooks on ``model``, steps ``first`` to ``last - 1``."""
    counter = OpCounter(first, last)
    with tempfile.TemporaryDirectory(prefix="step_ops_") as root:  # the suite's report goes there
        trainer = L.Trainer(accelerator="cpu", max_steps=last + 2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=LOG_EVERY,
                            default_root_dir=root, callbacks=counter.callbacks(VARIANTS[variant]()))
        trainer.fit(make_task(model), make_loader(model, last + 2))
    return counter


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__, prog="python benchmarks/step_ops.py")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp"])
    p.add_argument("--out", type=Path, default=BENCHMARKS / "results")
    args = p.parse_args(argv)
    quiet_lightning()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows, payload = [["model", "variant", "aten ops per step", "over the floor", "most frequent"]], {}
    for model in args.models:
        counted = {variant: count(model, variant) for variant in VARIANTS}
        floor = counted["floor"].per_step()
        for variant, counter in counted.items():
            top = ", ".join(f"{name[6:]} {n / counter.steps:.0f}" for name, n in counter.counts.most_common(4))
            rows.append([model, f"`{variant}`", f"{counter.per_step():.0f}", f"{counter.per_step() - floor:+.0f}", top])
            payload[f"{model}/{variant}"] = {"per_step": counter.per_step(), "steps": counter.steps,
                                             "counts": dict(counter.counts)}
    env = environment()
    command = command_line("benchmarks/step_ops.py", argv if argv is not None else sys.argv[1:])
    generated = [f"Command: `{command}`", "", environment_line(env), "",
                 f"Top-level `aten::` operations dispatched by the `on_before_optimizer_step` hooks per ordinary "
                 f"step (steps {FIRST}-{LAST - 1}, logging steps and the steps after them left out).", "",
                 markdown_table(rows)]
    write_results(args.out / "step_ops.md", "Torch operations per training step", generated,
                  {"environment": env, "command": command, "variants": payload})
    print("\n".join(generated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
