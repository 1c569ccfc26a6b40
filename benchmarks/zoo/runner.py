"""One run of the zoo: a scenario's model and data, one mode of the suite, one seed.

Modes:

- ``observe``: ``default_callbacks(auto_remediate=False, num_classes=...)``; the suite only
  watches, so training is what it would be without it (the package tests that the weights are
  bit-identical). Fault-free references run in this mode too, so their diagnoses are one more
  check for false alarms;
- ``remediate``: ``default_callbacks(auto_remediate=True, num_classes=..., **scenario.remedy)``,
  with the scenario's declared opt-ins.

The diagnoses come from the run's ``convergence_report.json`` (``logger=False``: the report lands
in the run's own ``default_root_dir``). A small recorder callback placed after the suite notes, for
every diagnosis, the optimizer step at which it entered the run's log (``noticed``): the report's
``step`` is the step the rule attributes the problem to, which for windowed rules can be earlier
than the step at which the rule was evaluated.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from benchmarks._timing import ForeignCpu
from lightning_convergence import default_callbacks
from lightning_convergence.callbacks._context import run_context
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.recorder.run_log import REPORT_FILENAME

LOG_EVERY_N_STEPS = 10  # the Trainer's logging cadence, which the suite's windows follow


@dataclass
class RunRecord:
    """What one run left behind, as plain data (it crosses process boundaries)."""

    scenario: str
    mode: str
    seed: int
    val_loss: float
    val_acc: float
    steps: int
    seconds: float
    losses: list[float]
    val_losses: list[tuple[int, float]]  # (step, val_loss) at each validation end
    diagnoses: list[dict[str, Any]]
    interventions: list[dict[str, Any]]
    noticed: list[int | None]  # per diagnosis (report order): the step it entered the run's log
    suite: str  # the callbacks, as configured
    error: str | None = None
    other_cores: float | None = None  # cores other processes kept busy during the run (Linux)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder(Callback):
    """The training loss of every batch, and the step at which each diagnosis was logged.

    Placed after the suite, so its hooks run after theirs in the same step: a diagnosis made in
    ``on_before_optimizer_step`` or ``on_train_batch_end`` of step ``k`` is seen here at ``k``.
    It reads the suite's shared log (a private structure of the package), read-only.
    """

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.val_losses: list[tuple[int, float]] = []
        self.logged: list[tuple[int, str, int]] = []  # (report step, kind, noticed step), in log order

    def _stamp(self, trainer: Trainer, step: int) -> None:
        diagnoses = run_context(trainer).log.diagnoses
        self.logged += [(d.step, d.kind, step) for d in diagnoses[len(self.logged):]]

    def noticed_for(self, report_diagnoses: list[dict[str, Any]]) -> list[int | None]:
        """The noticed step of each diagnosis of the report (which lists the log sorted by step)."""
        ordered = sorted(self.logged, key=lambda entry: entry[0])  # stable, as the report's sort
        if [(s, k) for s, k, _ in ordered] != [(d["step"], d["kind"]) for d in report_diagnoses]:
            return [None] * len(report_diagnoses)
        return [noticed for _, _, noticed in ordered]

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss) if loss is not None else math.nan)
        self._stamp(trainer, trainer.global_step - 1)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_losses.append((trainer.global_step, _metric(trainer, "val_loss")))
            self._stamp(trainer, max(trainer.global_step - 1, 0))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stamp(trainer, max(trainer.global_step - 1, 0))

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stamp(trainer, max(trainer.global_step - 1, 0))


def _metric(trainer: Trainer, key: str) -> float:
    value = trainer.callback_metrics.get(key)
    return float(value) if value is not None else math.nan


def suite_for(mode: str, num_classes: int | None, remedy: dict[str, Any]) -> list[Callback]:
    """The suite of a mode: observe watches; remediate acts with the declared opt-ins."""
    if mode == "remediate":
        return default_callbacks(auto_remediate=True, num_classes=num_classes, **remedy)
    return default_callbacks(auto_remediate=False, num_classes=num_classes)


def describe_suite(mode: str, num_classes: int | None, remedy: dict[str, Any]) -> str:
    args = [f"auto_remediate={mode == 'remediate'}", f"num_classes={num_classes}"]
    if mode == "remediate":
        args += [f"{k}={v!r}" for k, v in remedy.items()]
    return f"default_callbacks({', '.join(args)})"


def fit(scenario_name: str, mode: str, seed: int, root: str) -> RunRecord:
    """Train one run and collect its record; an exception in fit is recorded, not raised."""
    from benchmarks.zoo.scenarios import SCENARIOS

    spec = SCENARIOS[scenario_name]
    remedy = spec.remedy if mode == "remediate" else {}
    L.seed_everything(seed, verbose=False)
    model = spec.model()
    data = spec.data(seed)
    recorder = Recorder()
    callbacks = [*suite_for(mode, spec.num_classes, remedy), recorder]
    directory = os.path.join(root, scenario_name, mode, f"seed{seed}")
    os.makedirs(directory, exist_ok=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=spec.epochs, max_steps=spec.max_steps or -1,
        limit_train_batches=spec.limit_train_batches, logger=False, default_root_dir=directory,
        callbacks=callbacks, log_every_n_steps=LOG_EVERY_N_STEPS, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    error = None
    load = ForeignCpu()  # CPU that other processes used meanwhile: timing rules are sensitive to it
    load.start()
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
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
    elif error is None:
        error = f"no {REPORT_FILENAME} in {trainer.log_dir}"
    return RunRecord(
        scenario=scenario_name, mode=mode, seed=seed, val_loss=_metric(trainer, "val_loss"),
        val_acc=_metric(trainer, "val_acc"), steps=trainer.global_step, seconds=seconds, losses=recorder.losses,
        val_losses=recorder.val_losses,
        diagnoses=report["diagnoses"], interventions=report["interventions"],
        noticed=recorder.noticed_for(report["diagnoses"]), suite=describe_suite(mode, spec.num_classes, remedy),
        error=error, other_cores=load.cores,
    )


def fit_job(job: tuple[str, str, int, str]) -> dict[str, Any]:
    """``fit`` for a worker process: one torch thread, quiet Lightning, a plain dict back."""
    from benchmarks._report import quiet_lightning

    torch.set_num_threads(1)
    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")
    return fit(*job).to_dict()
