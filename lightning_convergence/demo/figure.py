"""The demo's figure: the faulty run without and with the suite, side by side."""

from __future__ import annotations

import math
import os

from lightning_convergence.readback.scalars import Series, read_scalars

_SEVERITY_COLOURS = {"info": "#9e9e9e", "warning": "#f28e2b", "critical": "#d62728"}


def _smooth(series: Series, beta: float = 0.8) -> Series:
    """An EMA of the finite values (a NaN loss breaks the line where it happens)."""
    out, ema = [], None
    for step, value in series:
        if not math.isfinite(value):
            out.append((step, math.nan))
            continue
        ema = value if ema is None else beta * ema + (1 - beta) * value
        out.append((step, ema))
    return out


def comparison_figure(without_dir: str, with_dir: str, report: dict | None, path: str, title: str) -> str:
    """Training loss and validation accuracy of both runs; the suite's diagnoses (coloured by
    severity) and interventions (black) as markers on the loss panel. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"without the suite": read_scalars(without_dir), "with the suite": read_scalars(with_dir)}
    colours = {"without the suite": "#d62728", "with the suite": "#1f77b4"}
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, scalars in runs.items():
        raw = scalars.get("train_loss", [])
        loss = _smooth(raw)
        if loss:
            loss_ax.plot(*zip(*loss), color=colours[name], label=name)
        broken = next((step for step, value in raw if not math.isfinite(value)), None)
        if broken is not None:
            finite = [v for _, v in loss if math.isfinite(v)]
            at = finite[-1] if finite else 0.0
            loss_ax.plot([broken], [at], marker="x", markersize=10, color=colours[name], linestyle="none")
            loss_ax.annotate(f"loss NaN/Inf (logged at step {broken})", (broken, at), textcoords="offset points",
                             xytext=(6, 6), color=colours[name])
        acc = scalars.get("val_acc", [])
        if acc:
            acc_ax.plot(*zip(*acc), marker="o", color=colours[name], label=name)
    report = report or {"diagnoses": [], "interventions": []}
    for d in report["diagnoses"]:
        loss_ax.axvline(d["step"], color=_SEVERITY_COLOURS[d["severity"]], linestyle="--", linewidth=1)
    for i in report["interventions"]:
        if i["action"] != "clip":
            loss_ax.axvline(i["step"], color="black", linestyle=":", linewidth=1)
    loss_ax.set(title="training loss (smoothed); dashed: diagnoses, dotted: interventions",
                xlabel="optimizer step", ylabel="loss")
    acc_ax.set(title="validation accuracy", xlabel="optimizer step", ylabel="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
