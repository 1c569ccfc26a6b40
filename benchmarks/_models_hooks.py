"""Measurement pieces of ``bench_overhead_models.py``: hook timers, a per-fit step estimate aware of
the callbacks' sampling, and a count of the tensor memory the callbacks hold.

``STEP_HOOKS`` and :func:`own_step_hooks` are copied from
``bench_gradient_monitor.py`` (kept in step with it by hand): that script is not a helper module, so
it is not imported from here. Nothing here imports ``lightning_convergence``.
"""

from __future__ import annotations

import time
import types
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

try:  # run as a script: benchmarks/ is on sys.path
    from _paired import FitResult
    from _timing import median
except ImportError:  # imported as benchmarks._models_hooks
    from benchmarks._paired import FitResult
    from benchmarks._timing import median

# The per-step Callback hooks; a callback is timed on those its class overrides.
STEP_HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
              "on_before_zero_grad", "on_train_batch_end")
# Called once per fit: timed apart, outside the step window.
ONCE_HOOKS = ("setup", "on_train_start", "on_train_end", "on_fit_end", "teardown")
FORWARD_HOOKS = "forward_hooks"  # DeadNeuronTracker's hooks on the activation modules, summed per step
SAMPLE_EVERY = 10  # DeadNeuronTracker's and InputSanityChecker's default sample_every_n_steps


def own_hooks(callback: Callback, names: Iterable[str]) -> list[str]:
    """The hooks among ``names`` that the callback's class overrides (the ones that cost anything)."""
    return [h for h in names if getattr(type(callback), h) is not getattr(Callback, h)]


def own_step_hooks(callback: Callback) -> list[str]:
    return own_hooks(callback, STEP_HOOKS)


def wrap_once(obj: Any, name: str, sink: dict[str, float], key: str) -> None:
    """Shadow ``obj.name``; add each call's seconds to ``sink[key]`` (hooks called once per fit)."""
    method = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - start

    setattr(obj, name, timed)


@dataclass
class PhaseFit(FitResult):
    """A timed fit whose step estimate keeps the cost of steps that come once in ``sample_every``.

    ``FitResult.step_ms`` takes the median of the ordinary steps: robust to bursts from other
    processes, but it drops a cost paid on one step in 10 (DeadNeuronTracker's and
    InputSanityChecker's sampled steps), since the median step is an unsampled one. Here the
    ordinary steps are split into sampled (``step % sample_every == 0``) and unsampled ones, and
    the steady step is ``((sample_every - 1) * median(unsampled) + median(sampled)) /
    sample_every``; the logging steps' extra is added as before. With ``log_every == 1`` every step
    logs, so there are no special steps and all steps are ordinary.
    """

    sample_every: int = SAMPLE_EVERY
    once: dict[str, float] = field(default_factory=dict)

    def special_steps(self) -> set[int]:
        return set() if self.log_every == 1 else super().special_steps()

    def steady_ms(self) -> float:
        special = self.special_steps()
        split: dict[bool, list[float]] = {True: [], False: []}
        for i, t in enumerate(self.intervals):
            s = self.first_step + i
            if s not in special:
                split[s % self.sample_every == 0].append(t)
        if not split[True] or not split[False]:
            return median(split[True] + split[False]) * 1e3
        n = self.sample_every
        return ((n - 1) * median(split[False]) + median(split[True])) / n * 1e3

    def step_ms(self) -> float:
        steady = self.steady_ms() / 1e3
        extra = sum(self.intervals[s - self.first_step] - steady for s in self.special_steps())
        return (steady + extra / len(self.intervals)) * 1e3


# --------------------------------------------------------------------------------- memory


_SKIP = (nn.Module, Trainer, torch.optim.Optimizer, str, bytes, int, float, bool, complex, type, types.ModuleType,
         types.FunctionType, types.BuiltinFunctionType, types.MethodType, weakref.ref, torch.device, torch.dtype)


def tensor_storages(roots: Iterable[Any], exclude: set[int]) -> dict[int, int]:
    """Bytes of every distinct tensor storage reachable from ``roots`` (through attributes,
    dataclass fields, dicts, lists, tuples and sets), leaving out the storages in ``exclude`` (the
    model's parameters, gradients and buffers, the optimizer's state) and never walking into a
    module, Trainer, optimizer, function or weak reference. Returns ``{data_ptr: nbytes}``."""
    found: dict[int, int] = {}
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            storage = obj.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in exclude:
                found[ptr] = max(found.get(ptr, 0), storage.nbytes())
            continue
        if isinstance(obj, _SKIP):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        else:
            stack.extend(getattr(obj, "__dict__", {}).values())
            for slot in getattr(type(obj), "__slots__", ()):
                stack.append(getattr(obj, slot, None))
    return found


def training_storages(pl_module: LightningModule, optimizers: Iterable[torch.optim.Optimizer]) -> set[int]:
    """The storages that training itself holds: parameters, their gradients, buffers, optimizer state."""
    tensors: list[Tensor] = list(pl_module.buffers())
    for p in pl_module.parameters():
        tensors.append(p)
        if p.grad is not None:
            tensors.append(p.grad)
    for optimizer in optimizers:
        for state in optimizer.state.values():
            tensors.extend(v for v in state.values() if isinstance(v, Tensor))
    return {t.untyped_storage().data_ptr() for t in tensors}


class RetainedProbe(Callback):
    """The most tensor storage the callbacks (and ``extra_roots()``, e.g. the suite's shared run
    context) hold beyond what training holds, walked at every ``on_train_batch_end`` and at
    ``on_train_end``. Put it first in the callback list, so that it walks before the suite's own
    batch-end and train-end hooks free anything (a buffer made and freed within one hook is not
    seen)."""

    def __init__(self, callbacks: list[Callback], extra_roots: Callable[[Trainer], list[Any]]) -> None:
        self.callbacks = callbacks
        self.extra_roots = extra_roots
        self.bytes = 0  # the most held at any walk
        self.at_end_bytes: int | None = None
        self.by_callback: dict[str, int] = {}  # each one's most at any walk
        self.max_step: int | None = None

    def _walk(self, trainer: Trainer, pl_module: LightningModule) -> int:
        exclude = training_storages(pl_module, trainer.optimizers)
        total: dict[int, int] = {}
        for callback in self.callbacks:
            found = tensor_storages([vars(callback)], exclude)
            name = type(callback).__name__
            self.by_callback[name] = max(self.by_callback.get(name, 0), sum(found.values()))
            total.update(found)
        shared = tensor_storages(self.extra_roots(trainer), exclude)
        key = "(shared run context)"
        self.by_callback[key] = max(self.by_callback.get(key, 0), sum(v for k, v in shared.items() if k not in total))
        total.update(shared)
        held = sum(total.values())
        if held > self.bytes:
            self.bytes, self.max_step = held, trainer.global_step
        return held

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._walk(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.at_end_bytes = self._walk(trainer, pl_module)
