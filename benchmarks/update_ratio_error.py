"""How far GradientNormMonitor's sampled update/weight ratio is from the exact one.

The monitor keeps 4096 values per weight tensor at fixed random positions to estimate the ratio
``||W_after - W_before|| / ||W_before||`` of each layer at logging steps. This fits the digits MLP
(first layer 64 -> 256: 16,640 values, so a quarter is sampled) with SGD and with Adam, five
seeds each, three epochs, and compares every logged ratio of that layer with the exact one
computed from full copies. The update-ratio test takes its tolerance from the worst error here.

Run from the repository root, with the venv active (about 1 minute on 2 CPU cores)::

    python benchmarks/update_ratio_error.py
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning as L  # noqa: E402

from lightning_convergence import GradientNormMonitor, tags  # noqa: E402
from tests.helpers.loggers import MemoryLogger  # noqa: E402
from tests.helpers.models import DigitsMLP, trainer_kwargs  # noqa: E402

EVERY = 5


class ExactRatio(L.Callback):
    """The exact ratio of ``net.0`` (weight and bias) at each logging step, from full copies."""

    def __init__(self) -> None:
        self.exact: dict[int, float] = {}
        self.before = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if (trainer.global_step + 1) % EVERY == 0:
            self.before = [p.detach().double().clone() for p in pl_module.net[0].parameters()]

    def on_train_batch_end(self, trainer, pl_module, *args):
        if self.before is None or trainer.global_step % EVERY:
            return
        after = [p.detach().double() for p in pl_module.net[0].parameters()]
        update = sum(float((a - b).square().sum()) for a, b in zip(after, self.before))
        weight = sum(float(b.square().sum()) for b in self.before)
        self.exact[trainer.global_step - 1] = math.sqrt(update / weight)
        self.before = None


def relative_errors(optimizer: str, seed: int, root: str) -> list[float]:
    L.seed_everything(seed, verbose=False)
    logger, exact = MemoryLogger(root), ExactRatio()
    model = DigitsMLP(hidden=256, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3)
    L.Trainer(callbacks=[GradientNormMonitor(log_every_n_steps=EVERY), exact],
              **trainer_kwargs(root, logger=logger, max_epochs=3)).fit(model)
    logged = dict(logger.series(tags.update_ratio("net.0")))
    return [abs(logged[step] / value - 1) for step, value in exact.exact.items()]


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as root:
        for optimizer in ("sgd", "adam"):
            errors = [e for seed in range(5) for e in relative_errors(optimizer, seed, root)]
            print(f"{optimizer}: {len(errors)} logging steps, relative error median "
                  f"{statistics.median(errors):.2%}, worst {max(errors):.2%}")


if __name__ == "__main__":
    main()
