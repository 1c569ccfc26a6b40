"""TrainingSpeedMonitor on a busy machine: healthy runs stay silent, a slow loader is still named.

While ``--load-processes`` other processes keep every core busy (each a tight loop of matrix
products on one thread), the demo's CNN and MLP train on the bundled digits with
``default_callbacks()`` observing, ``--repeats`` times each: the healthy controls. A control
is silent when no warning of kind ``slow_training`` or ``slow_data_loading`` is recorded. Then the
same MLP with a loader that sleeps 20 ms per batch in the training process: the fault, named when
``slow_data_loading`` with top cause ``data_loader_bottleneck`` is recorded.

    python -m benchmarks.speed_under_load --repeats 10 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_convergence import TrainingSpeedMonitor, default_callbacks
from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.demo.models import DigitsCNN, DigitsMLP

SPEED_KINDS = ("slow_training", "slow_data_loading")


def burn(stop: multiprocessing.Event) -> None:
    """Keep one core busy until ``stop`` is set."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


class SleepyData(Dataset):
    def __init__(self, inner: Dataset, sleep_s: float) -> None:
        self.inner, self.sleep_s = inner, sleep_s

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        time.sleep(self.sleep_s / 32)  # per sample: about sleep_s per batch of 32
        return self.inner[index]


class SleepyDigits(DigitsDataModule):
    def __init__(self, sleep_s: float) -> None:
        super().__init__(as_images=False)
        self.sleep_s = sleep_s

    def train_dataloader(self) -> DataLoader:
        return DataLoader(SleepyData(self.train_set, self.sleep_s), batch_size=self.batch_size, shuffle=True)


def one_fit(make_model, data, epochs: int) -> list[dict]:
    callbacks = default_callbacks()
    monitor = next(c for c in callbacks if isinstance(c, TrainingSpeedMonitor))
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=tempfile.mkdtemp(), log_every_n_steps=10)
    trainer.fit(make_model(), datamodule=data)
    return [d for d in monitor.records()["diagnoses"] if d["kind"] in SPEED_KINDS]


def measure(repeats: int, load_processes: int, epochs: int) -> dict:
    stop = multiprocessing.Event()
    burners = [multiprocessing.Process(target=burn, args=(stop,), daemon=True) for _ in range(load_processes)]
    for process in burners:
        process.start()
    try:
        controls = {"cnn": [], "mlp": []}
        for _ in range(repeats):
            for name, make in (("cnn", lambda: DigitsCNN(lr=0.05)), ("mlp", lambda: DigitsMLP(lr=0.05))):
                found = one_fit(make, DigitsDataModule(as_images=name == "cnn"), epochs)
                controls[name].append([(d["kind"], d["severity"]) for d in found])
        faults = []
        for _ in range(max(1, repeats // 3)):
            found = one_fit(lambda: DigitsMLP(lr=0.05), SleepyDigits(0.02), 1)
            faults.append([(d["kind"], d["severity"], d["causes"][0]["cause"] if d["causes"] else None) for d in found])
    finally:
        stop.set()
        for process in burners:
            process.join(timeout=10)
    warned = {name: sum(any(sev != "info" for _, sev in runs) for runs in found) for name, found in controls.items()}
    named = sum(any(k == "slow_data_loading" and s == "warning" and c == "data_loader_bottleneck" for k, s, c in run)
                for run in faults)
    return {"repeats": repeats, "load_processes": load_processes, "cpu_count": os.cpu_count(),
            "controls_warned": warned, "controls": controls, "fault_named": named, "fault_runs": len(faults),
            "faults": faults}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--load-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each healthy control")
    parser.add_argument("--out", default=None, help="folder for speed_under_load.json (none: print only)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.load_processes < 0 or args.epochs < 1:
        parser.error(f"--repeats and --epochs must be >= 1 and --load-processes >= 0, got {vars(args)}")
    warnings.filterwarnings("ignore")
    result = measure(args.repeats, args.load_processes, args.epochs)
    print(json.dumps({k: v for k, v in result.items() if k not in ("controls", "faults")}))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "speed_under_load.json"), "w") as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    main()
