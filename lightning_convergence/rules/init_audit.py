"""Auditing initial weights: all zero, identical rows (symmetry), a scale far from He/Xavier.

A layer's weight ``[out, ...]`` is viewed as one row per output unit. Rows that are all equal
make every unit compute, and then learn, the same thing (symmetry is never broken by gradient
descent); an all-zero weight is the extreme case. The scale test compares the weight's standard
deviation with the one that keeps activations' variance steady through the layer for the
activation that follows (He et al. 2015 for the ReLU family, ``sqrt(2 / fan_in)``; Glorot &
Bengio 2010 for tanh/sigmoid and when unknown, ``sqrt(2 / (fan_in + fan_out))``), and flags it
outside ``[expected / scale_factor, expected x scale_factor]``. torch's default initialisation
(``std = 1 / sqrt(3 fan_in)``, about 0.4x He) passes.

References:
    He, Zhang, Ren, Sun. "Delving Deep into Rectifiers", ICCV 2015.
    Glorot, Bengio. "Understanding the difficulty of training deep feedforward neural networks",
    AISTATS 2010.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_convergence.rules.findings import Finding

_MIN_WEIGHTS_FOR_SCALE = 32
_RELU_FAMILY = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "GELU", "SiLU", "Softplus")


def expected_std(fan_in: int, fan_out: int, activation: str | None) -> tuple[float, str]:
    """The standard deviation a well-initialised layer has, and the rule's name.

    Example:
        >>> round(expected_std(100, 50, "ReLU")[0], 4), expected_std(100, 50, "Tanh")[1]
        (0.1414, 'Xavier')
    """
    if activation in _RELU_FAMILY:
        return math.sqrt(2.0 / fan_in), "He"
    return math.sqrt(2.0 / (fan_in + fan_out)), "Xavier"


@torch.no_grad()
def audit_weight(name: str, weight: Tensor, activation: str | None, scale_factor: float = 10.0) -> Finding | None:
    """One finding for ``weight`` (rows = output units), or ``None`` when it looks right.

    Example:
        >>> audit_weight("fc", torch.zeros(8, 4), "ReLU").evidence["problem"]
        'all_zero'
        >>> audit_weight("fc", torch.nn.Linear(64, 32).weight, "ReLU") is None
        True
    """
    rows = weight.detach().reshape(weight.shape[0], -1).double()
    fan_out, fan_in = rows.shape
    if rows.numel() == 0 or fan_in == 0:
        return None
    if not bool(torch.isfinite(rows).all()):
        seen = f"The initial weights of `{name}` contain NaN/Inf."
        return Finding("poor_initialization", "critical", seen, layer=name,
                       evidence={"problem": "nonfinite"})
    if bool((rows == 0).all()):
        seen = (f"The initial weights of `{name}` are all zero: its {fan_out} units compute the same output and get "
                "the same gradient, so they stay identical (and with zero weights after it, no gradient flows back).")
        return Finding("poor_initialization", "warning", seen, layer=name,
                       evidence={"problem": "all_zero", "units": fan_out})
    if fan_out > 1 and bool((rows == rows[0]).all()):
        seen = (f"All {fan_out} output units of `{name}` start with identical weights (a constant initialisation): "
                "they compute the same thing and get the same gradient, so they never become different.")
        return Finding("poor_initialization", "warning", seen, layer=name,
                       evidence={"problem": "identical_rows", "units": fan_out})
    if rows.numel() < _MIN_WEIGHTS_FOR_SCALE:
        return None  # too few weights to judge a standard deviation
    # The receptive field of a convolution counts in fan_in: rows are [in * kernel] long.
    std = float(rows.std())
    expected, rule = expected_std(fan_in, fan_out, activation)
    ratio = std / expected
    if 1.0 / scale_factor <= ratio <= scale_factor:
        return None
    direction = "large" if ratio > 1 else "small"
    after = f" before a {activation}" if activation else ""
    seen = (f"The initial weights of `{name}`{after} have std {std:.3g}, {ratio:.3g}x the {rule} value {expected:.3g} "
            f"for fan-in {fan_in}: too {direction}, so activations and gradients "
            f"{'grow' if ratio > 1 else 'shrink'} layer after layer.")
    return Finding("poor_initialization", "warning", seen, layer=name,
                   evidence={"problem": f"scale_too_{direction}", "std": std, "expected": expected, "ratio": ratio,
                             "rule": rule, "activation": activation})
