"""How far does a harmless-looking nudge move a sweep run's outcome?

The sweep scores a remedy as harmful when its run ends more than 1.1x worse than its observed
twin. This measures the spread that any perturbation brings, remedy or not: the same observed run
(``default_callbacks()`` watching, as in the sweep) with one optimizer step's gradients scaled by
``--factor`` (0.99: a gentler change than any clip), against the same run with the factor 1.

    python -m benchmarks.perturbation --step 100 --factor 0.99 \\
        --runs gru/adamw/0.01/0 gru/adamw/0.01/1 rescnn/sgdm/0.1/0 gru/sgd/1.0/2
"""

from __future__ import annotations

import argparse
import tempfile

import lightning as L

import benchmarks.sweep.runner as runner
from benchmarks.sweep.setups import Job


class Nudge(L.Callback):
    """Scales every gradient by ``factor`` at optimizer step ``step`` (before the step)."""

    def __init__(self, step: int, factor: float) -> None:
        self.step, self.factor = step, factor

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            for param in pl_module.parameters():
                if param.grad is not None:
                    param.grad.mul_(self.factor)


def outcome(job: Job, nudge: Nudge, root: str) -> float:
    """The run's final validation loss with ``nudge`` added after the suite's callbacks."""
    suite = runner.default_callbacks
    runner.default_callbacks = lambda **kwargs: [*suite(**kwargs), nudge]
    try:
        return float(runner.fit(job, root)["outcome"])
    finally:
        runner.default_callbacks = suite


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", type=int, default=100, help="the optimizer step nudged")
    parser.add_argument("--factor", type=float, default=0.99, help="the scale of that step's gradients")
    parser.add_argument("--runs", nargs="+", required=True, metavar="ARCH/OPT/LR/SEED")
    args = parser.parse_args(argv)
    print(f"| run | outcome | gradients x{args.factor:g} at step {args.step} | ratio |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for spec in args.runs:
            arch, optimizer, lr, seed = spec.split("/")
            job = Job(arch, optimizer, float(lr), int(seed))
            plain = outcome(job, Nudge(args.step, 1.0), root)
            nudged = outcome(job, Nudge(args.step, args.factor), root)
            print(f"| {spec} | {plain:.4g} | {nudged:.4g} | {nudged / plain:.2f} |", flush=True)


if __name__ == "__main__":
    main()
