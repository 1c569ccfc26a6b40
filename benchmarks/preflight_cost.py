"""What PreflightCheck costs: its seconds on the demo's models and on the overhead benchmark's
models, and that time as a share of a 1,000-step run of the same model.

For each model, in one process: a fit of ``--steps`` optimizer steps without the check (the step
time is the median of its steps after the first 5), then the same fit with
``PreflightCheck(enabled=True)`` (the check's own seconds, from its report section). The share of
a 1,000-step run is ``preflight_seconds / (1000 x step_seconds)``. The checks' verdicts are listed
too: the overhead models train on random tokens and labels, so "labels that do not belong to their
inputs" is the right verdict there.

    python -m benchmarks.preflight_cost --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch

from benchmarks.overhead_models import make_loader, make_task
from lightning_convergence import PreflightCheck
from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.demo.models import DigitsCNN, DigitsMLP


class StepTimes(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self._start)


def _models(steps: int) -> dict:
    return {
        "demo cnn (digits)": (lambda: DigitsCNN(lr=0.05), lambda: DigitsDataModule(as_images=True)),
        "demo mlp (digits)": (lambda: DigitsMLP(lr=0.05), lambda: DigitsDataModule(as_images=False)),
        **{f"overhead {name}": (lambda name=name: make_task(name), lambda name=name: make_loader(name, steps + 400))
           for name in ("mlp", "cnn", "transformer")},
    }


def _fit(make_model, make_data, callbacks, steps: int) -> None:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=steps, max_epochs=None, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
                        default_root_dir=tempfile.mkdtemp())
    data = make_data()
    if isinstance(data, L.LightningDataModule):
        trainer.fit(make_model(), datamodule=data)
    else:
        trainer.fit(make_model(), train_dataloaders=data)


def measure(steps: int) -> list[dict]:
    rows = []
    for name, (make_model, make_data) in _models(steps).items():
        times = StepTimes()
        _fit(make_model, make_data, [times], steps)
        step_s = statistics.median(times.times[5:])
        check = PreflightCheck(enabled=True, max_seconds=120.0)
        _fit(make_model, make_data, [check], 1)
        section = check.section
        seconds = section["seconds"]
        rows.append({"model": name, "step_ms": round(1000 * step_s, 2), "preflight_s": round(seconds, 2),
                     "share_of_1000_steps": round(seconds / (1000 * step_s), 4),
                     "checks": {c["check"]: c["passed"] for c in section["checks"]},
                     "causes": sorted({d["causes"][0]["cause"] for d in check.records()["diagnoses"]
                                       if d["severity"] != "info"})})
        print(rows[-1], flush=True)
    return rows


def to_markdown(rows: list[dict], steps: int) -> str:
    lines = [f"# PreflightCheck: its cost ({torch.get_num_threads()} CPU threads, `python -m benchmarks.preflight_cost`)",
             "", f"Step time: the median of a {steps}-step fit without the check.", "",
             "| model | step (ms) | preflight (s) | share of a 1,000-step run | checks failed | top causes named |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        failed = ", ".join(k for k, v in r["checks"].items() if v is False) or "none"
        lines.append(f"| {r['model']} | {r['step_ms']} | {r['preflight_s']} | {100 * r['share_of_1000_steps']:.1f}% "
                     f"| {failed} | {', '.join(r['causes']) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for preflight.json and preflight.md")
    parser.add_argument("--steps", type=int, default=30, help="steps of the fit that measures the step time")
    args = parser.parse_args(argv)
    if args.steps < 10:
        parser.error(f"--steps must be at least 10, got {args.steps}")
    warnings.filterwarnings("ignore")
    rows = measure(args.steps)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "preflight.json"), "w") as handle:
        json.dump(rows, handle, indent=1)
    with open(os.path.join(args.out, "preflight.md"), "w") as handle:
        handle.write(to_markdown(rows, args.steps))
    print(to_markdown(rows, args.steps))


if __name__ == "__main__":
    main()
