"""The sweep's data: the bundled digits (classification) and diabetes (regression) sets from
scikit-learn, no download, with the data's implementation errors.

- ``"unscaled_targets"``: the regression target in raw units times ``TARGET_SCALE`` (values of
  order 1e4, as a target in cents or metres left unscaled);
- ``"sorted_unshuffled"``: the training set sorted by label and loaded with ``shuffle=False``;
- ``"uint8_inputs"``: the digits as raw 0-255 bytes (``uint8``), cast to float inside ``forward``.

Splits and batch orders come from private generators seeded by the run's seed.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_convergence.demo.data import load_digits_tensors

TARGET_SCALE = 1e4
BATCH_SIZE = 32
IMAGE_ARCHITECTURES = frozenset({"cnn", "rescnn"})


def _diabetes() -> tuple[torch.Tensor, torch.Tensor]:
    """442 samples: 10 standardised features, the target standardised (mean 0, std 1)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32)
    return (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()


class SweepData(L.LightningDataModule):
    """The data of one sweep run.

    Args:
        arch: the architecture (``"regression"`` reads diabetes; the CNNs read ``[N, 1, 8, 8]``
            images; the others flat ``[N, 64]`` digits).
        seed: the split and the batch order.
        error: ``None`` or one of the data errors above (an error of the module is ignored here,
            except ``"uint8_inputs"``).
    """

    def __init__(self, arch: str, seed: int, error: str | None = None) -> None:
        super().__init__()
        self.arch, self.seed, self.error = arch, seed, error

    def setup(self, stage: str) -> None:
        if self.arch == "regression":
            x, y = _diabetes()
            n_train = 350
        else:
            x, y = load_digits_tensors(as_images=self.arch in IMAGE_ARCHITECTURES)
            n_train = 1500
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        train, val = order[:n_train], order[n_train:]
        if self.error == "sorted_unshuffled":
            train = train[torch.argsort(y[train], stable=True)]
        if self.error == "unscaled_targets":
            y = y * TARGET_SCALE
        if self.error == "uint8_inputs":
            x = (x * 255).round().to(torch.uint8)
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])

    def train_dataloader(self) -> DataLoader:
        shuffle = self.error != "sorted_unshuffled"
        return DataLoader(self.train_set, batch_size=BATCH_SIZE, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
