"""Which curves go on which panel of a run's figure, from the scalar tags alone (no drawing).

The tags are the suite's (named in ``lightning_convergence.tags``, the one place that spells them)
plus the user's own losses and the ``lr-*`` tags of Lightning's ``LearningRateMonitor``. A panel is
made only when its data exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lightning_convergence import tags
from lightning_convergence.readback.scalars import Series


@dataclass(frozen=True)
class Line:
    """One curve: ``bold`` for the reference of its panel (the total norm, the threshold);
    ``stepwise`` for a value held until the next one (an LR factor), drawn as steps."""

    label: str
    series: Series
    bold: bool = False
    dashed: bool = False
    stepwise: bool = False


@dataclass(frozen=True)
class Panel:
    """One axes of the figure; ``right`` lines share the x axis on a second (log) y axis."""

    title: str
    ylabel: str
    lines: tuple[Line, ...]
    log_y: bool = False
    right: tuple[Line, ...] = ()
    right_label: str = ""
    markers: bool = False  # draw the diagnosis and intervention steps
    ymin: float | None = None  # a floor for the y axis (0 for fractions), else automatic


def _under(scalars: dict[str, Series], family: tags.Family) -> list[Line]:
    return [Line(family.key_of(tag), series) for tag, series in scalars.items() if family.owns(tag) and series]


def _wide_range(lines: tuple[Line, ...]) -> bool:
    """Positive values spanning more than two decades read better on a log axis."""
    values = [v for line in lines for _, v in line.series if math.isfinite(v)]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


def loss_panel(scalars: dict[str, Series]) -> Panel | None:
    """The user's loss tags and the suite's smoothed training loss, with event markers.

    Example:
        >>> panel = loss_panel({"train_loss": [(0, 2.3)], "val_acc": [(0, 0.1)], "epoch": [(0, 0.0)]})
        >>> [line.label for line in panel.lines]
        ['train_loss']
    """
    lines = [Line(tag, series) for tag, series in scalars.items()
             if not tags.is_suite_tag(tag) and "loss" in tag.lower() and series]
    ema = scalars.get(tags.LOSS_TRAIN_EMA)
    if ema:
        lines.append(Line("train loss EMA (suite)", ema, dashed=True))
    if not lines:
        return None
    return Panel("loss", "loss", tuple(lines), log_y=_wide_range(tuple(lines)), markers=True)


def gradient_panel(scalars: dict[str, Series]) -> Panel | None:
    """Gradient norm per layer, with the total in bold, on a log axis."""
    total_key = tags.grad_norm.key_of(tags.GRAD_NORM_TOTAL)
    layers = [line for line in _under(scalars, tags.grad_norm) if line.label != total_key]
    total = scalars.get(tags.GRAD_NORM_TOTAL)
    lines = layers + ([Line("total", total, bold=True)] if total else [])
    return Panel("gradient norm", "L2 norm", tuple(lines), log_y=True) if lines else None


def dead_units_panel(scalars: dict[str, Series]) -> Panel | None:
    """Fraction of dead units per layer."""
    lines = _under(scalars, tags.dead_fraction)
    return Panel("dead units", "dead fraction", tuple(lines), ymin=0.0) if lines else None


def clipping_panel(scalars: dict[str, Series]) -> Panel | None:
    """AutoClip's threshold against the norm before clipping (and after, where it differs)."""
    named = ((tags.AUTOCLIP_NORM, "pre-clip norm", False, False),
             (tags.AUTOCLIP_CLIPPED_NORM, "post-clip norm", False, True),
             (tags.AUTOCLIP_THRESHOLD, "clip threshold", True, True))
    lines = [Line(label, scalars[tag], bold=bold, dashed=dashed)
             for tag, label, bold, dashed in named if scalars.get(tag)]
    return Panel("clipping", "L2 norm", tuple(lines), log_y=True) if lines else None


def learning_rate_panel(scalars: dict[str, Series]) -> Panel | None:
    """The suite's LR factors (left) and the effective learning rates (right, log), as steps."""
    factors = [Line(tags.short(tag), series, stepwise=True) for tag, series in scalars.items()
               if (tag == tags.LR_FACTOR or tags.lr_factor.owns(tag)) and series]
    effective = [replace(line, stepwise=True) for line in _under(scalars, tags.effective_lr)]
    # Lightning's LearningRateMonitor logs "lr-<optimizer>[/pg<i>]".
    effective += [Line(tag, series, stepwise=True) for tag, series in scalars.items()
                  if tag.startswith("lr-") and series]
    if not factors and not effective:
        return None
    if not factors:  # one axis is enough
        return Panel("learning rate", "effective LR", tuple(effective), log_y=True)
    return Panel("learning rate", "LR factor", tuple(factors), right=tuple(effective), right_label="effective LR")


def select_panels(scalars: dict[str, Series]) -> list[Panel]:
    """The panels of a run's figure, top to bottom, only those with data.

    Example:
        >>> scalars = {"train_loss": [(0, 2.3)], tags.GRAD_NORM_TOTAL: [(0, 1.0)]}
        >>> [panel.title for panel in select_panels(scalars)]
        ['loss', 'gradient norm']
    """
    makers = (loss_panel, gradient_panel, dead_units_panel, clipping_panel, learning_rate_panel)
    return [panel for panel in (make(scalars) for make in makers) if panel is not None]
