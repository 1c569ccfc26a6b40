"""Activation hooks that a ``torch.compile``-d module can keep for the whole fit.

A forward hook on a submodule of a compiled module is traced by dynamo into the module's graph.
Whatever the hook reads becomes a guard: a Python flag that says "sample this batch" flips every
few steps and recompiles the graph each time; a hook that creates state on its first call
(declaring a window slot, a new site) breaks the graph. Measured on the digits MLP compiled in
``configure_model``: 2 graphs without the suite became 11 to 12 with 4 graph breaks.

So inside a compiled region the hook does not decide anything. It calls one opaque custom op,
:func:`observe_activation`, with the activation and a key. Dynamo and inductor keep the op as a
single extern call in the graph, without looking inside; at run time the op looks the key up
and runs the ordinary eager observer, which reads the sampling flag, the module's mode and the
site's window as plain Python. The graph is traced once and never guards on any of them.

The op must survive dead-code elimination, and an op without outputs is dropped by inductor's
scheduler even when marked side-effectful in FX (checked on torch 2.13). Declaring that it
mutates a 0-d ``token`` keeps it in every backend; the token is never written.

Example:
    >>> from torch import nn
    >>> seen = []
    >>> key = register_observer(lambda x: seen.append(tuple(x.shape)))
    >>> token = torch.zeros(())
    >>> torch.ops.lightning_convergence.observe_activation(torch.ones(2, 3), token, key)
    >>> seen
    [(2, 3)]
    >>> unregister_observer(key)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

Observer = Callable[[Tensor], None]

# Runtime observers by key. The graph holds only the int key, so a fit that ends (or a tracker
# that detaches) removes its observers, and a graph traced for it then calls nothing.
_OBSERVERS: dict[int, Observer] = {}
_KEYS = itertools.count()


@torch.library.custom_op("lightning_convergence::observe_activation", mutates_args=("token",))
def observe_activation(x: Tensor, token: Tensor, key: int) -> None:
    """Hand ``x`` to the observer registered under ``key`` (nothing when there is none).

    Args:
        x: the activation, detached.
        token: a 0-d tensor declared as mutated (never written) so that compilers keep the call.
        key: from :func:`register_observer`.
    """
    observer = _OBSERVERS.get(key)
    if observer is not None:
        observer(x)


@observe_activation.register_fake
def _observe_activation_fake(x: Tensor, token: Tensor, key: int) -> None:
    # Tracing sees no activations: nothing is recorded while a graph is built.
    return None


def register_observer(observer: Observer) -> int:
    """Register ``observer`` for :func:`observe_activation`; returns its key."""
    key = next(_KEYS)
    _OBSERVERS[key] = observer
    return key


def unregister_observer(key: int) -> None:
    """Remove the observer under ``key`` (no error when it is gone already)."""
    _OBSERVERS.pop(key, None)


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` runs some of its modules through ``torch.compile``.

    True when a submodule is compiled (``self.net = torch.compile(self.net)``, which wraps it
    in an ``OptimizedModule``) or when Lightning compiled the LightningModule itself
    (``trainer.fit(torch.compile(model))`` leaves ``_compiler_ctx`` on it).

    Example:
        >>> is_compiled(nn.Sequential(nn.Linear(2, 2)))
        False
        >>> is_compiled(nn.Sequential(torch.compile(nn.Linear(2, 2))))
        True
    """
    if getattr(model, "_compiler_ctx", None):
        return True
    optimized = getattr(torch._dynamo.eval_frame, "OptimizedModule", ())
    return any(isinstance(module, optimized) for module in model.modules())


def plain_name(name: str) -> str:
    """A module's name without the ``_orig_mod`` level that ``torch.compile`` adds, so that a
    compiled model's sites and metrics are named as the eager model's.

    Example:
        >>> plain_name("net._orig_mod.1")
        'net.1'
        >>> plain_name("_orig_mod.act")
        'act'
    """
    return ".".join(part for part in name.split(".") if part != "_orig_mod")
