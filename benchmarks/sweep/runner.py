"""One run of the sweep: ``default_callbacks()`` observing (``auto_remediate=False``), so the run
trains as it would without the suite, or acting (``auto_remediate=True``, the ``--remediate``
runs); its report read back from ``convergence_report.json``."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict
from typing import Any

import statistics
from collections import defaultdict

import lightning as L
import torch
from lightning.pytorch.loggers import Logger

from benchmarks.harness import RunRecorder, quiet_lightning
from benchmarks.sweep.data import TARGET_SCALE, SweepData
from benchmarks.sweep.models import SweepModule
from benchmarks.sweep.setups import DEFAULT_EPOCHS, EPOCHS, Job
from lightning_convergence import default_callbacks, tags
from lightning_convergence.recorder.run_log import REPORT_FILENAME

LOG_EVERY_N_STEPS = 10


class UpdateRatios(Logger):
    """A logger that keeps, per logged step, the median over layers of the suite's update/weight
    ratios (``convergence/update_ratio/<layer>``): what the learning-rate signatures read."""

    def __init__(self) -> None:
        super().__init__()
        self.by_step: dict[int, list[float]] = defaultdict(list)

    @property
    def name(self) -> str:
        return "update_ratios"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            if key.startswith(tags.update_ratio.prefix) and step is not None:
                self.by_step[int(step)].append(float(value))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def medians(self) -> list[tuple[int, float]]:
        return [(step, statistics.median(values)) for step, values in sorted(self.by_step.items())]


def _metric(trainer: L.Trainer, key: str) -> float:
    value = trainer.callback_metrics.get(key)
    return float(value) if value is not None else math.nan


def fit(job: Job, root: str, max_steps: int = -1) -> dict[str, Any]:
    """Train ``job`` and return its record (a crash of fit is recorded, not raised)."""
    L.seed_everything(job.seed, verbose=False)
    scale = TARGET_SCALE if job.error == "unscaled_targets" else 1.0
    model = SweepModule(job.arch, job.optimizer, job.lr, job.error, target_scale=scale)
    data = SweepData(job.arch, job.seed, job.error)
    directory = os.path.join(root, job.name.replace("/", "_"))
    recorder = RunRecorder()  # first: the loss of every step, the validation loss of every check
    ratios = UpdateRatios()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS.get(job.arch, DEFAULT_EPOCHS),
                        max_steps=max_steps, logger=ratios, default_root_dir=directory,
                        callbacks=[recorder, *default_callbacks(auto_remediate=job.remediate)],
                        log_every_n_steps=LOG_EVERY_N_STEPS,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    crash = None
    began = time.perf_counter()
    try:
        with recorder.observing():
            trainer.fit(model, datamodule=data)
    except Exception as exc:  # a run that crashes is a result, not a crash of the sweep
        crash = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - began
    report: dict[str, Any] = {"diagnoses": [], "summary": {}}
    path = os.path.join(trainer.log_dir or directory, REPORT_FILENAME)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    elif crash is None:
        crash = f"no {REPORT_FILENAME} in {trainer.log_dir}"
    return {**asdict(job), "half": job.half, "outcome": _metric(trainer, "outcome"),
            "val_acc": _metric(trainer, "val_acc"), "steps": trainer.global_step, "seconds": round(seconds, 2),
            "diagnoses": [{k: d.get(k) for k in ("kind", "severity", "step", "source", "layer", "causes")}
                          for d in report["diagnoses"]],
            "summary_causes": report.get("summary", {}).get("causes", []), "crash": crash,
            "interventions": [{"action": i["action"], "step": i["step"], "reason": i.get("detail", {}).get("reason")}
                              for i in report.get("interventions", [])],
            "remedied": report.get("summary", {}).get("remedied"),
            "losses": [round(v, 5) for v in recorder.losses], "val_losses": recorder.val_losses,
            "update_ratios": ratios.medians()}


def fit_job(args: tuple[Job, str, int]) -> dict[str, Any]:
    """``fit`` in a worker process: one torch thread, quiet Lightning."""
    torch.set_num_threads(1)
    quiet_lightning()
    warnings.filterwarnings("ignore")  # the suite's console lines: the report holds them
    return fit(*args)
