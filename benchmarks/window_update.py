"""The per-step cost of accumulating two statistics: torchmetrics against DeviceWindow.

``DeviceWindow`` (``lightning_convergence/stats/window.py``) is modelled on torchmetrics'
``Metric.add_state``; this measures why the package keeps its own small type on the per-step
path. Each variant merges one step's values into a sum slot and a max slot (float64, CPU, one
torch thread): a torchmetrics ``Metric`` with those two states, ``DeviceWindow.update``, and the
same two in-place operations written by hand (the floor).

Run from the repository root, with the venv active (about 10 s)::

    python benchmarks/window_update.py
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torchmetrics  # noqa: E402

from lightning_convergence.stats.window import DeviceWindow  # noqa: E402

CALLS, WARMUP, REPEATS = 20_000, 500, 3


class TwoStates(torchmetrics.Metric):
    """A step counter (sum) and the largest norm seen (max)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__(sync_on_compute=False)
        self.add_state("steps", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("norm_max", torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def update(self, norm: torch.Tensor) -> None:
        self.steps += 1
        self.norm_max = torch.maximum(self.norm_max, norm)

    def compute(self) -> torch.Tensor:
        return self.steps


def microseconds_per_call(call: Callable[[], None]) -> float:
    for _ in range(WARMUP):
        call()
    start = time.perf_counter()
    for _ in range(CALLS):
        call()
    return (time.perf_counter() - start) / CALLS * 1e6


def main() -> None:
    torch.set_num_threads(1)
    one, norm = torch.ones((), dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    metric = TwoStates()
    window = DeviceWindow()
    window.declare("steps", reduce="sum")
    window.declare("norm_max", reduce="max")
    window.allocate("cpu")
    steps, norm_max = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)

    def by_hand() -> None:
        steps.add_(one)
        torch.maximum(norm_max, norm, out=norm_max)

    variants = {"torchmetrics Metric.update": lambda: metric.update(norm),
                "DeviceWindow.update": lambda: window.update(steps=one, norm_max=norm),
                "two in-place ops by hand": by_hand}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(REPEATS):  # alternating, so a busy moment hits every variant alike
        for name, call in variants.items():
            times[name].append(microseconds_per_call(call))
    for name, values in times.items():
        print(f"{name}: {min(values):.1f} us per update (min of {REPEATS} x {CALLS:,})")


if __name__ == "__main__":
    main()
