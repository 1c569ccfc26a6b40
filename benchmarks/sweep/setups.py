"""What the sweep runs: the grid, the held-out split, the injected errors.

The split is by architecture and was fixed here before any rule was tuned on the sweep: rules
may be tuned on the ``TUNING`` half only; the ``HELD_OUT`` half is reported beside it as the
number that counts. Every setup (architecture x optimiser) runs every learning rate of its
optimiser's grid (a decade apart, 1e5 wide, so that about 1e2 either side of each setup's best
is covered) on every seed; each implementation error runs on two setups (one per half where the
error fits both) at the optimiser's usual learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

TUNING = ("mlp", "cnn", "gru")
HELD_OUT = ("mlp_bn", "rescnn", "transformer", "regression")
SEEDS = (0, 1, 2)

LR_GRID: dict[str, tuple[float, ...]] = {
    "sgd": (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
    "sgdm": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    "adamw": (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
}
"""Per optimiser, the learning rates every setup runs."""

USUAL_LR = {"sgd": 0.1, "sgdm": 0.01, "adamw": 1e-3}
"""The learning rate an implementation error is injected at (a grid point near the usual best)."""

ERRORS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    # error: (the cause it is, the setups it is injected into)
    "stale_gradients": ("stale_gradients", (("mlp", "sgdm"), ("mlp_bn", "sgdm"))),
    "schedule_to_zero": ("learning_rate_too_low", (("cnn", "sgdm"), ("rescnn", "sgdm"))),
    "sqrt_at_zero": ("non_differentiable_operation", (("mlp", "adamw"), ("regression", "adamw"))),
    "unscaled_targets": ("unnormalized_targets", (("regression", "adamw"), ("regression", "sgdm"))),
    "uint8_inputs": ("unnormalized_inputs", (("cnn", "sgdm"), ("rescnn", "sgdm"))),
    "sorted_unshuffled": ("unshuffled_data", (("gru", "adamw"), ("transformer", "adamw"))),
}
"""The implementation errors of the causes issue's failing inputs a-f, as the sweep injects them."""

EPOCHS = {"regression": 20}  # diabetes: 350 training samples, 11 batches an epoch
DEFAULT_EPOCHS = 5  # digits: 1500 training samples, 47 batches an epoch


@dataclass(frozen=True)
class Job:
    """One run of the sweep."""

    arch: str
    optimizer: str
    lr: float
    seed: int
    error: str | None = None
    remediate: bool = False  # the suite acting (``auto_remediate=True``), beside the observed run

    @property
    def half(self) -> str:
        return "tuning" if self.arch in TUNING else "held_out"

    @property
    def name(self) -> str:
        error = f"+{self.error}" if self.error else ""
        acting = "/remediate" if self.remediate else ""
        return f"{self.arch}/{self.optimizer}/lr{self.lr:g}{error}/seed{self.seed}{acting}"


def jobs(archs: tuple[str, ...] = TUNING + HELD_OUT, optimizers: tuple[str, ...] = tuple(LR_GRID),
         seeds: tuple[int, ...] = SEEDS, lrs_per_setup: int | None = None, errors: bool = True,
         remediate: bool = False) -> list[Job]:
    """Every run of the sweep, restricted to ``archs``, ``optimizers`` and ``seeds``;
    ``lrs_per_setup`` keeps that many grid points centred on the usual LR (the quick subset);
    ``remediate`` adds each run again with the suite acting."""
    chosen: list[Job] = []
    for arch in archs:
        for optimizer in optimizers:
            grid = LR_GRID[optimizer]
            if lrs_per_setup is not None:
                centre = grid.index(USUAL_LR[optimizer])
                start = max(0, min(len(grid) - lrs_per_setup, centre - lrs_per_setup // 2))
                grid = grid[start:start + lrs_per_setup]
            chosen += [Job(arch, optimizer, lr, seed) for lr in grid for seed in seeds]
    if errors:
        for error, (_, setups) in ERRORS.items():
            chosen += [Job(arch, optimizer, USUAL_LR[optimizer], seed, error)
                       for arch, optimizer in setups if arch in archs and optimizer in optimizers for seed in seeds]
    if remediate:
        chosen += [Job(j.arch, j.optimizer, j.lr, j.seed, j.error, remediate=True) for j in chosen]
    return chosen
