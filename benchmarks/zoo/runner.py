"""One run of the zoo: a scenario, one of its variants, one seed.

Variants of the zoo's faults and controls (``scenarios.py``):

- ``observe``: ``default_callbacks(auto_remediate=False, num_classes=...)``; the suite only
  watches, so training is what it would be without it (the package tests that the weights are
  bit-identical). Fault-free references run in this variant too, so their diagnoses are one more
  check for false alarms;
- ``remediate``: ``default_callbacks(auto_remediate=True, num_classes=..., **scenario.remedy)``,
  with the scenario's declared opt-ins.

The studies' variants are in ``studies.py``. The diagnoses come from the run's
``convergence_report.json`` (``logger=False``: the report lands in the run's own
``default_root_dir``). The harness's ``RunRecorder``, first in the callback list, notes for every
warning+ diagnosis the optimizer step at which the suite announced it (``noticed``): the report's
``step`` is the step the rule attributes the problem to, which for windowed rules can be earlier.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Trainer

from benchmarks.harness import ForeignCpu, RunRecorder, quiet_lightning
from lightning_convergence.recorder.run_log import REPORT_FILENAME

LOG_EVERY_N_STEPS = 10  # the Trainer's logging cadence, which the suite's windows follow


@dataclass
class RunRecord:
    """What one run left behind, as plain data (it crosses process boundaries)."""

    scenario: str
    variant: str
    seed: int
    val_loss: float
    val_acc: float
    steps: int
    seconds: float
    losses: list[float]
    val_losses: list[tuple[int, float]]  # (step, val_loss) at each validation end
    diagnoses: list[dict[str, Any]]
    interventions: list[dict[str, Any]]
    noticed: list[int | None]  # per diagnosis (report order): the step it was announced (warning+)
    suite: str  # the callbacks, as configured
    error: str | None = None
    other_cores: float | None = None  # cores other processes kept busy during the run (Linux)
    lrs: list[float] = field(default_factory=list)  # the LR the optimizer used, per step
    norms: list[float] = field(default_factory=list)  # global gradient norm before clipping (if recorded)
    extras: dict[str, Any] = field(default_factory=dict)  # the scenario's own measurements after fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(trainer: Trainer, key: str) -> float:
    value = trainer.callback_metrics.get(key)
    return float(value) if value is not None else math.nan


def fit(scenario_name: str, variant_name: str, seed: int, root: str, max_steps: int | None = None) -> RunRecord:
    """Train one run and collect its record; an exception in fit is recorded, not raised."""
    from benchmarks.zoo.studies import SCENARIO_BY_NAME, VARIANTS

    spec, variant = SCENARIO_BY_NAME[scenario_name], VARIANTS[variant_name]
    L.seed_everything(seed, verbose=False)
    model = spec.model()
    data = spec.data(seed)
    recorder = RunRecorder(norms=spec.norms)
    callbacks = [recorder, *variant.callbacks(spec)]
    directory = os.path.join(root, scenario_name.replace("/", "_"), variant_name, f"seed{seed}")
    os.makedirs(directory, exist_ok=True)
    trainer = L.Trainer(**{
        "accelerator": "cpu", "devices": 1, "max_epochs": spec.epochs, "max_steps": max_steps or spec.max_steps or -1,
        "limit_train_batches": spec.limit_train_batches, "logger": False, "default_root_dir": directory,
        "callbacks": callbacks, "log_every_n_steps": LOG_EVERY_N_STEPS, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False, **spec.trainer, **variant.trainer})
    error = None
    load = ForeignCpu()  # CPU that other processes used meanwhile: timing rules are sensitive to it
    load.start()
    began = time.perf_counter()
    with recorder.observing():
        try:
            trainer.fit(model, datamodule=data)
        except Exception as exc:  # a scenario that crashes the fit is a result, not a crash of the zoo
            error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - began
    load.stop()
    report_path = os.path.join(trainer.log_dir or directory, REPORT_FILENAME)
    report = {"diagnoses": [], "interventions": []}
    if os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
    elif error is None and len(callbacks) > 1:  # a run without the suite writes no report
        error = f"no {REPORT_FILENAME} in {trainer.log_dir}"
    extras = spec.measure(model, data) if spec.measure is not None and error is None else {}
    return RunRecord(
        scenario=scenario_name, variant=variant_name, seed=seed, val_loss=_metric(trainer, "val_loss"),
        val_acc=_metric(trainer, "val_acc"), steps=trainer.global_step, seconds=seconds, losses=recorder.losses,
        val_losses=recorder.val_losses, diagnoses=report["diagnoses"], interventions=report["interventions"],
        noticed=recorder.noticed_for(report["diagnoses"]), suite=variant.describe(spec), error=error,
        other_cores=load.cores, lrs=recorder.lrs, norms=recorder.norms, extras=extras,
    )


def fit_job(job: tuple[str, str, int, str, int | None]) -> dict[str, Any]:
    """``fit`` for a worker process: one torch thread, quiet Lightning, a plain dict back."""
    torch.set_num_threads(1)
    quiet_lightning()
    return fit(*job).to_dict()
