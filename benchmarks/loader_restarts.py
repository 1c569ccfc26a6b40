"""DataLoader workers restarted every epoch: what they cost, and what TrainingSpeedMonitor says.

The demo's MLP on the bundled digits, 5 epochs, ``num_workers=2``, ``default_callbacks()``
observing, ModelCheckpoint on, once with ``persistent_workers=False`` and once with ``True``,
alternating over ``--repeats`` pairs in one process (torch on one thread, so that the workers'
start-up is not hidden behind thread oversubscription). Prints the fit's wall time, the
monitor's share of the run spent at epoch starts, and its warnings.

    python -m benchmarks.loader_restarts --repeats 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_convergence import TrainingSpeedMonitor, default_callbacks
from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.demo.models import DigitsMLP


class WorkerData(DigitsDataModule):
    """The digits with two loader workers, persistent or started anew every epoch."""

    def __init__(self, persistent: bool) -> None:
        super().__init__(as_images=False)
        self.persistent = persistent

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=2,
                          persistent_workers=self.persistent)


def one_run(persistent: bool, root: str) -> dict:
    L.seed_everything(0, verbose=False)
    callbacks = default_callbacks(num_classes=10)
    monitor = next(c for c in callbacks if isinstance(c, TrainingSpeedMonitor))
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", logger=False, callbacks=callbacks, default_root_dir=root,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10)
    began = time.perf_counter()
    trainer.fit(DigitsMLP(), WorkerData(persistent))
    wall = time.perf_counter() - began
    shares = monitor.breakdown().get("shares", {})
    warnings = [f"{d['kind']} ({d['causes'][0]['cause']})" for d in monitor.records()["diagnoses"]
                if d["severity"] != "info" and d["causes"]]
    return {"wall": wall, "epoch_start": shares.get("epoch_start"), "warnings": warnings}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs, alternating")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print("| persistent_workers | fit wall (s) | epoch_start share | warnings |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            for persistent in (False, True):
                r = one_run(persistent, root)
                share = "-" if r["epoch_start"] is None else f"{r['epoch_start']:.1%}"
                print(f"| {persistent} | {r['wall']:.2f} | {share} | {', '.join(r['warnings']) or 'none'} |", flush=True)


if __name__ == "__main__":
    main()
