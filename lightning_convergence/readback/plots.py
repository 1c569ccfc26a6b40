"""One PNG figure per run, drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import replace
from typing import Any

from lightning_convergence._imports import _MATPLOTLIB_AVAILABLE
from lightning_convergence.readback.panels import Line, Panel, select_panels
from lightning_convergence.readback.run import Run

FIGURE_FILENAME = "convergence_plots.png"
SEVERITY_COLOURS = {"info": "tab:cyan", "warning": "tab:orange", "critical": "tab:red"}
INTERVENTION_COLOUR = "tab:purple"
# Curves on a panel with event markers avoid the markers' colours.
_CURVE_COLOURS = ("tab:blue", "tab:green", "tab:brown", "tab:olive", "tab:pink", "tab:gray")
_MAX_MARKERS = 200  # event lines drawn of each kind, at most; the printed timeline lists them all


def _require_matplotlib() -> None:
    if not _MATPLOTLIB_AVAILABLE:
        raise ModuleNotFoundError("The report's figures need matplotlib: `pip install matplotlib`.")


def _plot_line(ax: Any, line: Line, colour: str | None = None) -> None:
    steps = [step for step, _ in line.series]
    values = [value if math.isfinite(value) else math.nan for _, value in line.series]  # gaps at NaN/Inf
    (drawn,) = ax.plot(steps, values, label=line.label, color="black" if line.bold and colour is None else colour,
                       linewidth=2.0 if line.bold else 1.2, linestyle="--" if line.dashed else "-",
                       drawstyle="steps-post" if line.stepwise else "default",
                       marker="o" if len(steps) <= 2 else None, markersize=3)
    bad = [step for step, value in line.series if not math.isfinite(value)]
    if bad:
        # A NaN/Inf value has no height: mark its step along the top of the axes, in the line's colour.
        ax.plot(bad, [0.97] * len(bad), linestyle="none", marker="x", color=drawn.get_color(),
                transform=ax.get_xaxis_transform(), label=f"{line.label}: NaN/Inf")


def _set_log_y(ax: Any, lines: tuple[Line, ...]) -> None:
    # A log axis with no positive value to show would be empty and warn; stay linear then.
    if any(math.isfinite(v) and v > 0 for line in lines for _, v in line.series):
        ax.set_yscale("log", nonpositive="mask")


def _draw_markers(ax: Any, report: dict[str, Any]) -> list[Any]:
    """Vertical lines at diagnosis steps (colour by severity) and intervention steps; legend proxies."""
    from matplotlib.lines import Line2D

    proxies = []
    for d in report["diagnoses"][:_MAX_MARKERS]:
        ax.axvline(d["step"], color=SEVERITY_COLOURS.get(d["severity"], "grey"), linewidth=1.3, alpha=0.8, zorder=0)
    present = {d["severity"] for d in report["diagnoses"]}
    for severity in [*SEVERITY_COLOURS, *sorted(present - set(SEVERITY_COLOURS))]:
        if severity in present:
            proxies.append(Line2D([], [], color=SEVERITY_COLOURS.get(severity, "grey"), label=f"diagnosis: {severity}"))
    for i in report["interventions"][:_MAX_MARKERS]:
        ax.axvline(i["step"], color=INTERVENTION_COLOUR, linestyle=":", linewidth=1.0, alpha=0.7, zorder=0)
    if report["interventions"]:
        proxies.append(Line2D([], [], color=INTERVENTION_COLOUR, linestyle=":", label="intervention"))
    return proxies


def _draw_panel(ax: Any, panel: Panel, report: dict[str, Any] | None) -> None:
    if panel.markers:
        ax.set_prop_cycle(color=_CURVE_COLOURS)
    for line in panel.lines:
        _plot_line(ax, line)
    if panel.log_y:
        _set_log_y(ax, panel.lines)
    if panel.ymin is not None:
        ax.set_ylim(bottom=panel.ymin)
    ax.set_title(panel.title, fontsize=10, loc="left")
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if panel.right:
        right = ax.twinx()
        colours = [f"C{(len(panel.lines) + k) % 10}" for k in range(len(panel.right))]
        for line, colour in zip(panel.right, colours):
            _plot_line(right, replace(line, dashed=True), colour)
        _set_log_y(right, panel.right)
        right.set_ylabel(panel.right_label)
        handles += right.get_legend_handles_labels()[0]
    if panel.markers and report is not None:
        handles += _draw_markers(ax, report)
    # Outside the axes, right of any second y axis: a legend never hides a curve or a marker.
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.08 if panel.right else 1.01, 1.0),
              ncol=1 + len(handles) // 12)


def write_figure(run: Run, path: str) -> str | None:
    """Draw ``run``'s panels (see :mod:`~lightning_convergence.readback.panels`) into ``path``.

    Args:
        run: a loaded run.
        path: the PNG to write; its folder is created when missing.

    Returns:
        ``path``, or ``None`` when the run has no scalars to plot (nothing is written).

    Raises:
        ModuleNotFoundError: matplotlib is not installed.

    Example:
        >>> import tempfile
        >>> run = Run("/logs/v0", "v0", None, {"train_loss": [(0, 2.3), (5, 1.1), (9, 0.4)]})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = write_figure(run, os.path.join(folder, "v0.png"))
        ...     os.path.getsize(path) > 1000
        True
    """
    panels = select_panels(run.scalars)
    if not panels:
        return None
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 1.0 + 2.6 * len(panels)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        _draw_panel(ax, panel, run.report)
    axes[-1].set_xlabel("optimizer step")
    figure.suptitle(textwrap.fill(f"{run.name}: {run.headline}", width=130), fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")  # "tight": outside legends are never cut
    return path
