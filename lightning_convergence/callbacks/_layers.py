"""Naming parameters' layers and finding the order in which modules run forward."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

GroupBy = Literal["module", "parameter"]


def layer_of(param_name: str, group_by: GroupBy) -> str:
    """The layer a parameter belongs to: its owning module's name, or the parameter's own name.

    Example:
        >>> layer_of("encoder.layers.0.attn.in_proj_weight", "module")
        'encoder.layers.0.attn'
        >>> layer_of("scale", "module")
        'scale'
    """
    if group_by == "parameter" or "." not in param_name:
        return param_name
    return param_name.rsplit(".", 1)[0]


class ForwardOrderRecorder:
    """Records the order in which parameter-owning modules first run forward, once.

    Hooks are registered with :meth:`attach` and removed with :meth:`detach` (idempotent).
    """

    def __init__(self) -> None:
        self.order: list[str] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, module: nn.Module) -> None:
        """Hook the parameter-owning modules, except inside ``torch.compile``-d regions.

        A hook added to a compiled region and removed after one step costs a recompile, and its
        order would only say what the model's order says for most models: modules there are
        ordered as the model registers them (see :func:`ordered_layers`).
        """
        self.detach()
        self.order = []
        if getattr(module, "_compiler_ctx", None):  # Lightning compiled the whole module
            return
        optimized = getattr(torch._dynamo.eval_frame, "OptimizedModule", ())
        compiled = [name for name, child in module.named_modules() if isinstance(child, optimized)]
        for name, child in module.named_modules():
            if any(name == c or name.startswith(f"{c}.") or c == "" for c in compiled):
                continue
            if any(True for _ in child.parameters(recurse=False)):
                self._handles.append(child.register_forward_pre_hook(self._make_hook(name)))

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _args: object) -> None:
            if name not in self.order:
                self.order.append(name)

        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def ordered_layers(param_names: list[str], group_by: GroupBy, forward_order: list[str]) -> list[str]:
    """Distinct layers of ``param_names``, in forward order where known, else in model order."""
    layers: list[str] = []
    for name in param_names:
        layer = layer_of(name, group_by)
        if layer not in layers:
            layers.append(layer)
    rank = {module: i for i, module in enumerate(forward_order)}

    def key(item: tuple[int, str]) -> tuple[int, int]:
        position, layer = item
        module = layer if group_by == "module" else layer_of(layer, "module")
        return (rank.get(module, len(rank)), position)

    return [layer for _, layer in sorted(enumerate(layers), key=key)]
