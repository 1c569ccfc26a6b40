"""The zoo's data: the bundled digits with one fault switched on, and a synthetic sequence task.

Everything is generated from private ``torch.Generator``s seeded by the run's seed, so a run is the
same whatever else the process did before, and the global RNG is left to the model's init.

Faults that happen on one optimizer step (a NaN batch, a batch that overflows the loss, a batch of
very long sequences) are applied by the training loader's ``collate_fn``: it counts the batches it
has built since the fit began, and with one optimizer step per batch (no gradient accumulation)
batch ``k`` is optimizer step ``k``, the step the scenario declares as its onset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from lightning_convergence.demo.data import DigitsDataModule

Batch = Any
BatchFault = Callable[[Batch, torch.Generator], Batch]


class StepFaultCollate:
    """``default_collate``, then ``faults[k]`` applied to the ``k``-th batch built (0-based).

    Args:
        faults: batch index -> function of (batch, generator) returning the faulty batch.
        seed: seed of the generator the fault functions draw from.
    """

    def __init__(self, faults: dict[int, BatchFault], seed: int) -> None:
        self.faults = dict(faults)
        self.generator = torch.Generator().manual_seed(10_000 + seed)
        self.batches = 0

    def __call__(self, samples: list) -> Batch:
        batch = default_collate(samples)
        fault = self.faults.get(self.batches)
        self.batches += 1
        return fault(batch, self.generator) if fault is not None else batch


class SlowDataset(Dataset):
    """A dataset whose ``__getitem__`` sleeps first: a loader doing slow I/O on the training process."""

    def __init__(self, inner: Dataset, sleep_s: float) -> None:
        self.inner = inner
        self.sleep_s = sleep_s

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        time.sleep(self.sleep_s)
        return self.inner[index]


class ZooDigits(DigitsDataModule):
    """``DigitsDataModule`` (1500 train / 297 validation, split fixed by ``seed``) with zoo faults.

    Args:
        seed: the split, the batch order and every fault's random draws.
        batch_size: training batch size.
        as_images: ``[N, 1, 8, 8]`` images or flat ``[N, 64]`` vectors.
        train_size: keep only this many training samples.
        pixel_scale: multiply every input (train and validation) by this: 255 gives raw 0-255
            pixels, the preprocessing a user forgot.
        label_noise: replace this share of the training labels by uniformly drawn classes
            (validation labels stay clean).
        sleep_s: seconds each training sample's ``__getitem__`` sleeps.
        step_faults: batch index -> fault function (see :class:`StepFaultCollate`).
    """

    def __init__(self, seed: int, batch_size: int = 32, as_images: bool = True, train_size: int | None = None,
                 pixel_scale: float = 1.0, label_noise: float = 0.0, sleep_s: float = 0.0,
                 step_faults: dict[int, BatchFault] | None = None) -> None:
        super().__init__(batch_size=batch_size, as_images=as_images, seed=seed, train_size=train_size)
        self.pixel_scale = pixel_scale
        self.label_noise = label_noise
        self.sleep_s = sleep_s
        self.step_faults = step_faults or {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        x, y = self.train_set.tensors
        vx, vy = self.val_set.tensors
        if self.pixel_scale != 1.0:
            x, vx = x * self.pixel_scale, vx * self.pixel_scale
        if self.label_noise > 0:
            g = torch.Generator().manual_seed(20_000 + self.seed)
            flip = torch.rand(len(y), generator=g) < self.label_noise
            y = torch.where(flip, torch.randint(0, 10, (len(y),), generator=g), y)
        self.train_set = TensorDataset(x, y)
        self.val_set = TensorDataset(vx, vy)

    def train_dataloader(self) -> DataLoader:
        dataset: Dataset = SlowDataset(self.train_set, self.sleep_s) if self.sleep_s > 0 else self.train_set
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed),
                          collate_fn=StepFaultCollate(self.step_faults, self.seed))


def adding_problem(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997): ``[n, length, 2]`` sequences of (value
    in [0, 1), marker), two markers per sequence; the target is the sum of the two marked values."""
    values = torch.rand(n, length, generator=generator)
    markers = torch.zeros(n, length)
    first = torch.randint(0, length // 2, (n,), generator=generator)
    second = torch.randint(length // 2, length, (n,), generator=generator)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)
    y = (values * markers).sum(dim=1, keepdim=True)
    return x, y


class AddingProblem(L.LightningDataModule):
    """The adding problem as a data module: 2048 training and 512 validation sequences.

    Args:
        seed: the data, the batch order and every fault's random draws.
        length: sequence length.
        batch_size: training batch size.
        step_faults: batch index -> fault function (see :class:`StepFaultCollate`).
    """

    def __init__(self, seed: int, length: int = 20, batch_size: int = 32,
                 step_faults: dict[int, BatchFault] | None = None) -> None:
        super().__init__()
        self.seed = seed
        self.length = length
        self.batch_size = batch_size
        self.step_faults = step_faults or {}

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(30_000 + self.seed)
        self.train_set = TensorDataset(*adding_problem(2048, self.length, g))
        self.val_set = TensorDataset(*adding_problem(512, self.length, g))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed),
                          collate_fn=StepFaultCollate(self.step_faults, self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512)


# ------------------------------------------------------------------ one-step batch faults


def nan_pixels(batch: Batch, generator: torch.Generator) -> Batch:
    """One sample of the batch becomes NaN (a corrupt image)."""
    x, y = batch
    x = x.clone()
    x[int(torch.randint(0, len(x), (1,), generator=generator))] = float("nan")
    return x, y


def scaled_inputs(factor: float) -> BatchFault:
    """The whole batch's inputs multiplied by ``factor`` (a batch from a source with other units)."""

    def fault(batch: Batch, generator: torch.Generator) -> Batch:
        x, y = batch
        return x * factor, y

    return fault


def long_sequences(length: int) -> BatchFault:
    """The batch replaced by adding-problem sequences of ``length`` steps (a rare very long record)."""

    def fault(batch: Batch, generator: torch.Generator) -> Batch:
        x, _ = batch
        return adding_problem(len(x), length, generator)

    return fault
