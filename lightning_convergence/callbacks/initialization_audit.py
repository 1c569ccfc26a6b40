"""InitializationAudit: the initial weights of every Linear and Conv layer, once, when fit starts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.rules.init_audit import audit_weight
from lightning_convergence.stats.activations import activation_kind
from lightning_convergence.validation import check_positive_float

_AUDITED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layers_and_activations(model: nn.Module) -> list[tuple[str, nn.Module, str | None]]:
    """Each audited layer with the activation that follows it in module order (before the next
    audited layer), or ``None``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> [(n, a) for n, _, a in layers_and_activations(net)]
        [('0', 'Tanh'), ('2', None)]
    """
    found: list[list] = []
    for name, module in model.named_modules():
        if isinstance(module, _AUDITED) and module.weight is not None and module.weight.requires_grad:
            found.append([name, module, None])
        elif activation_kind(module) is not None and found and found[-1][2] is None:
            found[-1][2] = type(module).__name__
    return [tuple(item) for item in found]


class InitializationAudit(ConvergenceCallback):
    """Audits initial weights: all zero, identical rows (symmetry), scale far from He/Xavier.

    Runs once at the start of a fresh fit (not when resuming from a checkpoint). Each Linear and
    Conv layer's weight is compared with what keeps the signal's variance steady for the
    activation that follows it in module order (He for the ReLU family, Xavier for tanh/sigmoid
    and when none follows); torch's default initialisation passes. A constant or zero last layer
    is only ``info``: the classes' different targets break its symmetry. Advice only; nothing
    is changed.

    Args:
        scale_factor: a weight std more than this factor away from the expected one is flagged.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.

    Raises:
        ValueError: ``scale_factor`` is not a finite number > 1.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[InitializationAudit()], logger=False)
    """

    def __init__(self, scale_factor: float = 10.0, report_window_steps: int = 500) -> None:
        super().__init__(auto_remediate=False, report_window_steps=report_window_steps)
        check_positive_float("scale_factor", scale_factor, minimum=1.0)
        self.scale_factor = float(scale_factor)
        self._audited = False

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._audited or trainer.global_step > 0:
            return  # a resumed run's weights are trained, not initial
        self._audited = True
        layers = layers_and_activations(pl_module)
        for index, (name, module, activation) in enumerate(layers):
            finding = audit_weight(name, module.weight, activation, self.scale_factor)
            if finding is None:
                continue
            last = index == len(layers) - 1
            if last and finding.evidence.get("problem") in ("all_zero", "identical_rows"):
                finding = replace(finding, severity="info")
            self.record(trainer, finding, step=trainer.global_step)

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["audited"] = self._audited
        return state

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._audited = bool(state_dict.get("audited", False))
