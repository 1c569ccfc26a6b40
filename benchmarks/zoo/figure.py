"""The zoo's summary figure: one panel per fault and healthy control, on the first seed.

Each panel shows the training loss per optimizer step (a 5-step moving mean, log scale, cut at 20x
the first loss) of the observe run (the fault left alone), the remediated run and the fault-free
reference, the fault's onset, and the first hit (the step diagnosed, and where it was logged);
NaN/Inf losses are ticks along the top edge.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from benchmarks.zoo.scoring import Scores  # noqa: E402

SMOOTH = 5


def _smooth(values: list[float]) -> list[float]:
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - SMOOTH + 1): i + 1] if math.isfinite(v)]
        out.append(sum(window) / len(window) if len(window) == min(SMOOTH, i + 1) else math.nan)
    return out


def _curve(ax, losses: list[float], top: float, **style) -> None:
    ys = [min(v, top) if math.isfinite(v) and v > 0 else math.nan for v in _smooth(losses)]
    ax.plot(range(len(ys)), ys, linewidth=1.0, **style)
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:  # NaN/Inf losses: marks along the top edge
        ax.plot(bad, [1.0] * len(bad), "|", color=style.get("color", "k"), transform=ax.get_xaxis_transform(),
                markersize=8)


def _top(*runs) -> float:
    """The y-axis ceiling: 20x the largest first loss, so that a blow-up to 1e28 does not flatten the rest."""
    firsts = [r["losses"][0] for r in runs if r is not None and r["losses"] and math.isfinite(r["losses"][0])]
    return 20 * max(firsts) if firsts else math.inf


def plot(scores: Scores, path: Path) -> None:
    seed = scores.seeds[0]
    faults = [f for f in scores.faults if f.seed == seed]
    controls = [c for c in scores.controls if c.seed == seed]
    panels = len(faults) + len(controls)
    if panels == 0:
        return
    cols = 5
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows + 0.8), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, f in zip(flat, faults):
        top = _top(f.observe, f.remediate, f.reference)
        if f.reference is not None:
            _curve(ax, f.reference["losses"], top, color="0.6", label="reference")
        _curve(ax, f.observe["losses"], top, color="tab:red", label="observe (fault left alone)")
        if f.remediate is not None:
            _curve(ax, f.remediate["losses"], top, color="tab:blue", label="remediated")
        ax.axvline(f.scenario.onset or 0, color="k", linestyle=":", linewidth=0.8)
        if f.hit is not None:
            ax.axvline(f.hit.step, color="tab:green", linewidth=1.2)
            if f.hit.noticed is not None and f.hit.noticed != f.hit.step:
                ax.axvline(f.hit.noticed, color="tab:green", linestyle="--", linewidth=0.8)
            verdict = f"{f.hit.kind} @ {f.hit.step}"
        else:
            verdict = "MISSED"
        ax.set_title(f"{f.scenario.name}\n{verdict}", fontsize=8, color="k" if f.hit else "tab:red")
    for ax, c in zip(flat[len(faults):], controls):
        top = _top(c.observe, c.remediate)
        _curve(ax, c.observe["losses"], top, color="tab:red", label="observe")
        if c.remediate is not None:
            _curve(ax, c.remediate["losses"], top, color="tab:blue", label="remediated")
        kinds = sorted({d["kind"] for d, _ in c.alarms})
        ax.set_title(f"{c.scenario.name} (healthy)\n" + (f"ALARM: {', '.join(kinds)}" if kinds else "no warnings"),
                     fontsize=8, color="tab:red" if kinds else "k")
    for ax in flat[:panels]:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=7)
        ax.set_xlabel("optimizer step", fontsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    handles, labels = flat[0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="k", linestyle=":"), plt.Line2D([], [], color="tab:green"),
                plt.Line2D([], [], color="tab:green", linestyle="--")]
    labels += ["fault onset", "first hit (step diagnosed)", "first hit logged"]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Convergence zoo, seed {seed}: training loss (5-step mean, log scale); titles: first hit or miss",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
