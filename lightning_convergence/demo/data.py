"""The bundled digits data (8x8 images shipped inside scikit-learn): no download at run time."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


def load_digits_tensors(as_images: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits, scaled to [0, 1]; images ``[N, 1, 8, 8]`` or flat ``[N, 64]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    return (x.view(-1, 1, 8, 8) if as_images else x), y


class DigitsDataModule(L.LightningDataModule):
    """Digits split 1500 train / 297 validation with a fixed permutation.

    Args:
        batch_size: training batch size.
        as_images: images for a CNN, or flat vectors for an MLP.
        seed: seed of the split's permutation (a private generator: the global RNG is untouched).
        train_size: keep only this many training samples (a tiny set overfits).
        nan_sample: make this training sample's pixels NaN (a corrupt sample).
    """

    def __init__(self, batch_size: int = 32, as_images: bool = True, seed: int = 0, train_size: int | None = None,
                 nan_sample: int | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.as_images = as_images
        self.seed = seed
        self.train_size = train_size
        self.nan_sample = nan_sample

    def setup(self, stage: str) -> None:
        x, y = load_digits_tensors(self.as_images)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        train, val = order[:1500], order[1500:]
        if self.train_size is not None:
            train = train[: self.train_size]
        train_x = x[train].clone()
        if self.nan_sample is not None:
            train_x[self.nan_sample] = float("nan")
        self.train_set = TensorDataset(train_x, y[train])
        self.val_set = TensorDataset(x[val], y[val])

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
