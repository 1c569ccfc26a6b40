"""One learning-rate control per optimizer that every remedy shares.

Each owner (a callback) contributes a multiplicative factor per param group. Around each
``optimizer.step()`` the control multiplies every group's ``lr`` by the product of the factors and
puts the original value back right after, with the optimizer's own step pre/post hooks. So the
learning rate the optimizer uses is ``scheduler LR x our factors``, while ``param_group["lr"]``
outside the step stays exactly what the user's scheduler set: schedulers that recompute from base
LRs (LambdaLR, OneCycleLR) and those that multiply the current LR (StepLR, CosineAnnealingLR,
ReduceLROnPlateau) keep their own trajectory, and nothing compounds. Checkpoints taken between
steps hold the scheduler's LR, never ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

FactorFn = Callable[[int], float]  # param group index -> factor


class LRControl:
    """Applies owners' factors to one optimizer's param groups during its step.

    Args:
        optimizer: the optimizer to control.

    Example:
        >>> import torch
        >>> param = torch.nn.Parameter(torch.ones(1))
        >>> optimizer = torch.optim.SGD([param], lr=1.0)
        >>> control = LRControl(optimizer)
        >>> control.set_owner("warmup", lambda group: 0.5)
        >>> param.grad = torch.ones(1)
        >>> optimizer.step()
        >>> param.item(), optimizer.param_groups[0]["lr"], control.last_effective_lrs
        (0.5, 1.0, [0.5])
        >>> control.detach()
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._owners: dict[str, FactorFn] = {}
        self._after_step: dict[str, Callable[[], None]] = {}
        self._saved: list | None = None
        self._depth = 0  # nesting of step() calls
        self._handles: list = []
        self.last_effective_lrs: list[float] = []
        self.last_factors: list[float] = []
        self.exclusive: str | None = None  # when set, only this owner's factor applies

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def set_owner(self, owner: str, factor: FactorFn, after_step: Callable[[], None] | None = None) -> None:
        """Register (or replace) ``owner``'s factor function, and what it does after a step."""
        self._owners[owner] = factor
        if after_step is not None:
            self._after_step[owner] = after_step
        if not self.attached:
            self._handles = [
                self.optimizer.register_step_pre_hook(self._before_step),
                self.optimizer.register_step_post_hook(self._after),
            ]

    def remove_owner(self, owner: str) -> None:
        self._owners.pop(owner, None)
        self._after_step.pop(owner, None)
        if not self._owners:
            self.detach()

    def _active(self) -> dict[str, FactorFn]:
        """The owners whose factors apply: all of them, or only ``exclusive`` (a probe that must
        see the configured learning rate, without a warmup's or a remedy's factor)."""
        if self.exclusive is not None and self.exclusive in self._owners:
            return {self.exclusive: self._owners[self.exclusive]}
        return self._owners

    def factors(self) -> list[float]:
        """The product of every active owner's factor, per param group."""
        values = []
        active = self._active()
        for index in range(len(self.optimizer.param_groups)):
            product = 1.0
            for factor in active.values():
                product *= factor(index)
            values.append(product)
        return values

    def _before_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        # A subclass whose step() calls super().step() runs the hooks twice, nested (torch wraps
        # every class's step): act on the outermost call only.
        self._depth += 1
        if self._depth > 1:
            return
        factors = self.factors()
        self._saved = [group["lr"] for group in optimizer.param_groups]
        for group, factor in zip(optimizer.param_groups, factors):
            if factor != 1.0:
                group["lr"] = group["lr"] * factor
        self.last_factors = factors
        self.last_effective_lrs = [float(group["lr"]) for group in optimizer.param_groups]

    def _after(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        self._depth = max(self._depth - 1, 0)
        if self._depth > 0:
            return
        if self._saved is not None:
            for group, lr in zip(optimizer.param_groups, self._saved):
                group["lr"] = lr
            self._saved = None
        active = self._active()
        for owner, callback in list(self._after_step.items()):
            if owner in active:
                callback()

    def detach(self) -> None:
        """Remove the hooks (and restore the LRs if a step was interrupted between them)."""
        if self._saved is not None:
            for group, lr in zip(self.optimizer.param_groups, self._saved):
                group["lr"] = lr
            self._saved = None
        self._depth = 0
        for handle in self._handles:
            handle.remove()
        self._handles = []
