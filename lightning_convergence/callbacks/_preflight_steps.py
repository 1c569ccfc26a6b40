"""Training steps taken outside Lightning's loop, before the first batch, and undone afterwards.

:class:`PreflightSteps` runs one optimizer step (or one forward pass) on a batch the way the loop
would (the strategy's ``training_step``, so a DDP wrapper, autocast and the precision plugin's
backward and optimizer step are the run's own, with the user's gradient clipping), but touches
nothing the run keeps: on leaving it, the weights, buffers, optimizer state and hyperparameters,
LR schedulers, fp16 scaler, random number generators (:class:`ExactSnapshot`), the gradients, the
loop's step counters and the module's logging are as they were. While it runs, the module's
``self.log`` calls are kept here, not sent to the loggers, and the suite's other callbacks pause
(``RunContext.probing``).

Under manual optimisation ``training_step`` itself takes the backward pass and the step; under
automatic optimisation this module does, as Lightning's loop does (zero the gradients, forward,
backward, step).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from lightning_convergence.callbacks._context import run_context
from lightning_convergence.callbacks._trainer_reads import LOSS_KEYS, over_ranks
from lightning_convergence.remedies.snapshot import ExactSnapshot

OWNER = "preflight"


def read_batches(trainer: Trainer, count: int) -> tuple[list[Any], bool]:
    """The first ``count`` batches of a fresh pass over the training DataLoader, on the device,
    and whether its sampler reads in order. Call inside :class:`PreflightSteps` (the random
    state a fresh pass draws is put back).

    Raises:
        TypeError: the training data is not one ``DataLoader`` (a dict or list of loaders).
    """
    loader = trainer.train_dataloader
    if not isinstance(loader, DataLoader):
        raise TypeError(f"the training data is a {type(loader).__name__}, not one DataLoader")
    sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(sampler, "sampler", loader.sampler)
    # A loader or sampler with its own generator draws its order from it, not from the global
    # random state the snapshot restores: a fresh pass would move the run's data order.
    generators = {id(g): g for g in (loader.generator, getattr(sampler, "generator", None),
                                     getattr(loader.sampler, "generator", None))
                  if isinstance(g, torch.Generator)}
    states = {key: g.get_state() for key, g in generators.items()}
    batches = []
    try:
        for index, batch in enumerate(loader):
            if index >= count:
                break
            batches.append(trainer.strategy.batch_to_device(batch))
    finally:
        for key, g in generators.items():
            g.set_state(states[key])
    return batches, isinstance(sampler, SequentialSampler)


def configured_lr(group: dict) -> float:
    """The learning rate a param group is configured for: a one-cycle schedule's ``max_lr``, else
    the ``initial_lr`` a torch scheduler records (the rate a warmup climbs to, the start of a
    decay), else the group's ``lr``.

    Example:
        >>> configured_lr({"lr": 1e-5, "initial_lr": 1e-3}), configured_lr({"lr": 0.1})
        (0.001, 0.1)
    """
    for key in ("max_lr", "initial_lr", "lr"):
        value = group.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return float(group["lr"])


class OutputCapture:
    """The model's output in a forward pass: the last floating tensor of at least two dimensions
    and ``batch_size`` rows that a module returned (the outermost module called, or a head), so
    a loss module's scalar is not taken for it."""

    def __init__(self, module: nn.Module, batch_size: int) -> None:
        self.batch_size, self.output = batch_size, None
        self._handles = [m.register_forward_hook(self._hook) for m in module.modules()]

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if (isinstance(output, Tensor) and output.is_floating_point() and output.dim() >= 2
                and output.shape[0] == self.batch_size):
            self.output = output.detach()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class StaleGradientWatch:
    """Whether each backward pass adds onto gradients an earlier optimizer step already used.

    A tensor hook on every trainable parameter runs before the incoming gradient is accumulated
    into ``.grad``: if the optimizer stepped since that parameter's last backward and ``.grad``
    still holds non-zero values, nothing zeroed it. Gradient accumulation over micro-batches (no
    step in between) is not counted. Costs one host read per parameter per backward; preflight only.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.steps = 0
        self.checked = self.stale = 0
        self._seen: dict[int, int] = {}
        self._handles = [p.register_hook(self._hook_for(p)) for p in params if p.requires_grad]

    def _hook_for(self, param: nn.Parameter) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            if self.steps == 0 or self._seen.get(id(param)) == self.steps:
                return
            self._seen[id(param)] = self.steps
            self.checked += 1
            if param.grad is not None and bool(param.grad.detach().ne(0).any()):  # host read: preflight only
                self.stale += 1
        return hook

    @property
    def share(self) -> float | None:
        return self.stale / self.checked if self.checked else None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class PreflightSteps:
    """A context in which training steps can be taken and all of them undone on exit.

    Args:
        trainer, pl_module: the fit's.

    Use ``with PreflightSteps(trainer, pl_module) as steps:`` then :meth:`step`, :meth:`loss`,
    :meth:`set_multiplier`, :meth:`reset` (back to the state at entry, still inside).
    """

    def __init__(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trainer, self.module = trainer, pl_module
        self.logged: dict[str, Tensor] = {}
        self.multiplier = 1.0
        self.on_optimizer_step: Callable[[torch.optim.Optimizer], None] | None = None
        self._snapshot = ExactSnapshot()
        self._grads: list[tuple[nn.Parameter, Tensor | None]] = []
        self._progress: list[tuple[Any, dict]] = []
        self._patched: list[str] = []

    @property
    def manual(self) -> bool:
        return not self.module.automatic_optimization

    # ----------------------------------------------------------------- enter and exit

    def __enter__(self) -> PreflightSteps:
        trainer, module = self.trainer, self.module
        self._grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in module.parameters()]
        loop = trainer.fit_loop.epoch_loop
        self._progress = [(obj, obj.state_dict()) for obj in (
            loop.automatic_optimization.optim_progress, loop.manual_optimization.optim_step_progress,
            loop.batch_progress)]
        self._snapshot.take(module, trainer.optimizers, trainer.global_step, schedulers=self._schedulers(),
                            scaler=getattr(trainer.precision_plugin, "scaler", None))
        self._modes = {m: m.training for m in module.modules()}
        for name in ("log", "log_dict"):  # the module's logging is kept here while the steps run
            setattr(module, name, getattr(self, f"_{name}"))
            self._patched.append(name)
        self._configure()
        context = run_context(trainer)
        context.probing = True
        for optimizer in trainer.optimizers:
            control = context.lr_control(optimizer)
            control.set_owner(OWNER, lambda group: self.multiplier)
            control.exclusive = OWNER  # a warmup's or a remedy's factor does not apply meanwhile
        return self

    def __exit__(self, *exc: Any) -> None:
        trainer, module = self.trainer, self.module
        context = run_context(trainer)
        try:
            self._restore()
        finally:  # even when the restore fails: no factor, pause or patched method is left behind
            for optimizer in trainer.optimizers:
                control = context.lr_control(optimizer)
                control.exclusive = None
                control.remove_owner(OWNER)
            context.probing = False
            for name in self._patched:
                module.__dict__.pop(name, None)
            self._patched = []
            for obj, state in self._progress:
                obj.load_state_dict(state)
            self._snapshot.clear()

    def reset(self) -> None:
        """Put back the state from entry (weights, optimizer, RNG, gradients, modes); stay inside."""
        self._restore()
        self._configure()

    def _configure(self) -> None:
        """Every param group at its configured rate, not where a schedule starts (a warmup's 0)."""
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = configured_lr(group)

    def _restore(self) -> None:
        with torch.no_grad():
            self._snapshot.restore(self.module, self.trainer.optimizers, schedulers=self._schedulers(),
                                   scaler=getattr(self.trainer.precision_plugin, "scaler", None))
            for param, grad in self._grads:
                param.grad = None if grad is None else grad.clone()
        for m, training in self._modes.items():
            m.train(training)
        self.multiplier = 1.0

    def _schedulers(self) -> list:
        return [config.scheduler for config in self.trainer.lr_scheduler_configs]

    def _log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, Tensor) and value.numel() == 1:
            self.logged[name] = value.detach().reshape(()).float()
        elif isinstance(value, (int, float)):
            self.logged[name] = torch.tensor(float(value))

    def _log_dict(self, dictionary: dict, *args: Any, **kwargs: Any) -> None:
        for name, value in dictionary.items():
            self._log(name, value)

    # ----------------------------------------------------------------- steps

    def set_multiplier(self, multiplier: float) -> None:
        """The learning rate of the next steps, as a multiple of the run's (a factor of the shared
        LR control, on top of the scheduler's LR and the other remedies' factors)."""
        self.multiplier = float(multiplier)

    def step(self, batch: Any, batch_idx: int = 0) -> float:
        """One optimizer step on ``batch``; the loss before the step, averaged over the ranks
        (NaN when none was found). Under DDP a collective: every rank calls it alike."""
        self.logged.clear()
        with torch.enable_grad():
            if self.manual:
                output = self.trainer.strategy.training_step(batch, batch_idx)
                loss = self._loss_of(output)
            else:
                optimizer = self.trainer.optimizers[0]
                found: list[Tensor | None] = [None]

                def closure() -> Tensor | None:
                    optimizer.zero_grad(set_to_none=True)
                    output = self.trainer.strategy.training_step(batch, batch_idx)
                    loss = found[0] = self._loss_tensor(output)
                    if loss is not None:
                        self.trainer.strategy.backward(loss, optimizer)
                    return loss

                self.trainer.strategy.optimizer_step(optimizer, closure, model=self.module)
                loss = found[0]
        return self._agreed(loss)

    def loss(self, batch: Any, batch_idx: int = 0) -> float:
        """The loss of ``batch`` in evaluation mode, without an update (automatic optimisation
        only: a manual ``training_step`` steps), averaged over the ranks."""
        self.logged.clear()
        modes = {m: m.training for m in self.module.modules()}
        self.module.eval()
        try:
            with torch.no_grad():
                output = self.trainer.strategy.training_step(batch, batch_idx)
                loss = self._loss_tensor(output)
        finally:
            for m, training in modes.items():
                m.train(training)
        return self._agreed(loss)

    def _loss_tensor(self, output: Any) -> Tensor | None:
        loss = output.get("loss") if isinstance(output, dict) else output
        return loss if isinstance(loss, Tensor) and loss.numel() == 1 else None

    def _loss_of(self, output: Any) -> Tensor | None:
        loss = self._loss_tensor(output)
        if loss is None:
            loss = next((self.logged[k] for k in LOSS_KEYS if k in self.logged), None)
        return loss

    def _agreed(self, loss: Tensor | None) -> float:
        device = self.module.device
        value = torch.tensor(math.nan, device=device) if loss is None else loss.detach().float().reshape(())
        return float(over_ranks(self.trainer, value.to(device), "mean"))  # host read and, under DDP, one all_reduce


@contextlib.contextmanager
def output_capture(module: nn.Module, batch_size: int) -> Iterator[OutputCapture]:
    """:class:`OutputCapture` for the duration of the block."""
    capture = OutputCapture(module, batch_size)
    try:
        yield capture
    finally:
        capture.remove()


def batch_size_of(batch: Any) -> int | None:
    """The leading dimension of the first tensor in ``batch``."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        size = batch_size_of(value)
        if size is not None:
            return size
    return None
