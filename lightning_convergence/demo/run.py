"""Run one faulty configuration twice, without and with the suite, and tell the story."""

from __future__ import annotations

import json
import logging
import os
import textwrap
import warnings
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.demo.faults import FAULTS
from lightning_convergence.demo.figure import comparison_figure
from lightning_convergence.demo.models import MODELS
from lightning_convergence.readback.timeline import observation_of, top_cause_of
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.recorder.run_log import REPORT_FILENAME
from lightning_convergence.suite import default_callbacks



@dataclass
class RunResult:
    name: str
    log_dir: str
    val_acc: float
    val_loss: float
    train_loss: float
    steps: int
    report: dict | None


def _metric(trainer: L.Trainer, key: str) -> float:
    value = trainer.callback_metrics.get(key)
    return float(value) if value is not None else float("nan")


def _fit(name: str, fault: str, out: str, epochs: int, seed: int, with_suite: bool) -> RunResult:
    spec = FAULTS[fault]
    L.seed_everything(seed, verbose=False)
    kind, model_args = spec["model"]
    model = MODELS[kind](**model_args)
    data = DigitsDataModule(seed=seed, **spec.get("data", {}))
    logger = TensorBoardLogger(out, name=name, version=0)
    callbacks = suite_for(fault) if with_suite else []
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
        log_every_n_steps=10, enable_checkpointing=False, enable_model_summary=False,
    )
    with warnings.catch_warnings():
        # The table printed at the end says it all; keep the progress bar readable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        trainer.fit(model, data)
    report_path = os.path.join(logger.log_dir, REPORT_FILENAME)
    report = None
    if os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
    return RunResult(name, logger.log_dir, _metric(trainer, "val_acc"), _metric(trainer, "val_loss"),
                     _metric(trainer, "train_loss"), trainer.global_step, report)


def suite_for(fault: str) -> list:
    """``default_callbacks(auto_remediate=True, ...)`` with the fault's opt-in remedies."""
    return default_callbacks(auto_remediate=True, log_every_n_steps=10, **FAULTS[fault].get("suite", {}))


def _table(rows: list[list[str]], widths: list[int]) -> str:
    lines = []
    for row in rows:
        cells = [textwrap.shorten(cell, width, placeholder="...").ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def describe(result: RunResult) -> str:
    """The diagnoses and interventions of a run with the suite, as two tables."""
    report = result.report or {"diagnoses": [], "interventions": [], "summary": {"headline": "no report"}}
    rows = [["step", "severity", "kind", "layer", "likely cause", "what was seen"]]
    rows += [[str(d["step"]), d["severity"], d["kind"], d["layer"] or "-", top_cause_of(d) or "-", observation_of(d)]
             for d in report["diagnoses"]]
    text = "Diagnoses\n" + _table(rows, [5, 8, 20, 12, 22, 70])
    for d in report["diagnoses"]:
        if d["severity"] != "info":
            wrapped = textwrap.fill(d["message"], width=100, initial_indent="  ", subsequent_indent="  ")
            text += f"\n\nStep {d['step']}, {d['kind']}:\n{wrapped}"
    if report["interventions"]:
        irows = [["step", "action", "detail"]]
        irows += [[str(i["step"]), i["action"], json.dumps(i["detail"])] for i in report["interventions"]]
        text += "\n\nInterventions\n" + _table(irows, [5, 12, 100])
    else:
        text += "\n\nInterventions: none"
    return text + f"\n\nSummary: {report['summary']['headline']}"


def actions(report: dict | None) -> str:
    """What the suite did, in a few words: each action with its count and first step."""
    done: dict[str, list[int]] = {}
    for i in (report or {}).get("interventions", []):
        done.setdefault(i["action"], []).append(i["step"])
    words = {"clip": "clipped outliers", "skip_step": "skipped bad steps", "lr_scale": "changed the LR",
             "warmup": "warmed up", "reinit_units": "revived dead units", "rollback": "rolled back", "stop": "stopped"}
    return ", ".join(f"{words.get(a, a)} ({len(steps)}x from step {min(steps)})" for a, steps in done.items())


def verdict(without: RunResult, with_suite: RunResult) -> str:
    """One line comparing the two runs."""
    def state(r: RunResult) -> str:
        if not torch.isfinite(torch.tensor(r.train_loss)):
            return f"the loss became NaN/Inf (final val acc {r.val_acc:.2f})"
        stuck = " (chance level: it did not learn)" if r.val_acc < 0.2 else ""
        return f"final val acc {r.val_acc:.2f}, val loss {r.val_loss:.3f}{stuck}"

    report = with_suite.report or {"diagnoses": []}
    serious = [d for d in report["diagnoses"] if d["severity"] != "info"]
    first: dict[str, int] = {}
    for d in serious:
        first.setdefault(d["kind"], d["step"])
    flagged = ", ".join(f"{kind} (step {step})" for kind, step in first.items())
    told = f"the suite flagged {flagged}" if serious else "the suite saw nothing wrong"
    did = actions(with_suite.report)
    told += f" and {did}" if did else " and changed nothing"
    return f"Without the suite: {state(without)}. With it: {told}; {state(with_suite)}."


def run_demo(fault: str = "lr_high", out: str = "convergence_demo", epochs: int | None = None,
             seed: int = 0) -> tuple[RunResult, RunResult]:
    """Run the demo and print what happened; returns both runs' results. ``epochs=None`` takes
    the fault's own length (4 epochs for most)."""
    epochs = epochs or FAULTS[fault].get("epochs", 4)
    # Lightning's rank-zero info lines are left out while the demo runs, and only then: the
    # caller's logging (a notebook, a test) is as it was afterwards.
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return _run_demo(fault, out, epochs, seed)
    finally:
        logger.setLevel(level)


def _run_demo(fault: str, out: str, epochs: int, seed: int) -> tuple[RunResult, RunResult]:
    print(f"lightning-convergence demo: fault {fault!r}: {FAULTS[fault]['what']}, on the bundled digits data.")
    extra = FAULTS[fault].get("suite")
    if extra:
        print(f"The suite runs with these opt-in settings for this fault: {extra}")
    print()
    print("[1/2] Training without the suite ...")
    without = _fit("without_suite", fault, out, epochs, seed, with_suite=False)
    print("\n[2/2] Training with default_callbacks(auto_remediate=True) ...")
    with_suite = _fit("with_suite", fault, out, epochs, seed, with_suite=True)
    print("\n" + describe(with_suite))
    print("\nVerdict: " + verdict(without, with_suite))
    figure = comparison_figure(without.log_dir, with_suite.log_dir, with_suite.report,
                               os.path.join(out, f"{fault}.png"), f"{fault}: {FAULTS[fault]['what']}")
    print(f"Figure: {figure}")
    print(f"\nReport: {os.path.join(with_suite.log_dir, REPORT_FILENAME)}")
    print(f"TensorBoard: tensorboard --logdir {os.path.abspath(out)}")
    return without, with_suite
