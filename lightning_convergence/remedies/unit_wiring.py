"""Which layer feeds an activation and which reads it: the wiring ReDo needs, found safely.

ReDo re-initialises a unit's incoming weights and zeroes its outgoing ones. That keeps the
network's function unchanged only if the activation's units come from exactly one layer (the
*producer*, possibly through a per-unit normalisation) and go to exactly one layer (the
*consumer*, possibly through dropout, pooling or a flatten). Module execution order alone cannot
tell that: a residual connection that also reads the activation is invisible to module hooks.

So :class:`WiringProbe` records one training forward (each leaf module's input and output
autograd nodes) and :meth:`WiringProbe.resolve` checks the data flow on the autograd graph of the
loss: every tensor on the path producer -> activation -> consumer must have exactly one reader.
Anything else (a residual, a branch, an unknown module in between, a shape that does not match)
is reported with the reason, and those units are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PRODUCERS = (nn.Linear, *_CONV)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_BEFORE = (nn.Dropout, nn.Identity, *_NORMS)  # allowed between producer and activation
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
          nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_AFTER = (nn.Dropout, nn.Identity, nn.Flatten, *_POOLS)  # allowed between activation and consumer
# Autograd nodes of functional ops that keep each unit's values separate (a view, a pool, dropout).
_PASSTHROUGH_NODES = ("View", "UnsafeView", "ReshapeAlias", "Clone", "NativeDropout", "MaxPool",
                      "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")
_FLATTENING_NODES = ("View", "UnsafeView", "ReshapeAlias")
_MAX_HOPS = 8


@dataclass
class UnitWiring:
    """Where one activation site's units come from and go to.

    ``columns_per_unit`` is how many consumer input columns one unit feeds (more than one when
    a convolution's channels are flattened into a linear layer).
    """

    producer_name: str
    producer: nn.Module
    consumer_name: str
    consumer: nn.Module
    norms: list[tuple[str, nn.Module]] = field(default_factory=list)
    columns_per_unit: int = 1


@dataclass
class _Call:
    name: str
    module: nn.Module
    in_node: Any
    in_shape: tuple[int, ...] | None
    out_node: Any = None
    out_shape: tuple[int, ...] | None = None


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


class WiringProbe:
    """Records the leaf-module calls of the forwards between :meth:`attach` and :meth:`detach`.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> probe = WiringProbe()
        >>> probe.attach(model)
        >>> loss = model(torch.randn(3, 4)).sum()
        >>> probe.detach()
        >>> wiring = probe.resolve(loss, {"1": ("1", 0)}, {"1": 1})
        >>> wiring["1"].producer_name, wiring["1"].consumer_name
        ('0', '2')
    """

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, model: nn.Module) -> None:
        self.detach()
        self.calls = []
        for name, module in model.named_modules():
            if next(module.children(), None) is None:  # leaf modules only
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
                self._handles.append(module.register_forward_hook(self._post_hook()))

    def _pre_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = _first_tensor(args)
            node = x.grad_fn if x is not None else None
            self.calls.append(_Call(name, module, node, tuple(x.shape) if x is not None else None))

        return hook

    def _post_hook(self):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            call = next((c for c in reversed(self.calls) if c.module is module and c.out_shape is None), None)
            y = _first_tensor(output)
            if call is not None and y is not None:
                call.out_node, call.out_shape = y.grad_fn, tuple(y.shape)

        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Drop the recorded calls (they hold autograd nodes, and through them activations)."""
        self.calls = []

    def resolve(self, loss: Tensor, sites: dict[str, tuple[str, int]],
                unit_dims: dict[str, int]) -> dict[str, UnitWiring | str]:
        """For each site ``name -> (module name, call index)``: its wiring, or why it is unsafe.

        ``unit_dims`` gives each site's unit dimension in its output.
        """
        readers = _count_readers(loss)
        result: dict[str, UnitWiring | str] = {}
        for site, (module_name, call_index) in sites.items():
            positions = [i for i, c in enumerate(self.calls) if c.name == module_name]
            if call_index >= len(positions):
                result[site] = "it did not run in the probed forward"
                continue
            result[site] = _wire(self.calls, positions[call_index], readers, unit_dims.get(site, 1))
        return result


def _count_readers(loss: Tensor) -> dict[int, int]:
    """How many autograd nodes read each node's output, over the whole graph of ``loss``."""
    readers: dict[int, int] = {}
    root = loss.grad_fn
    if root is None:
        return readers
    seen = {id(root)}
    stack, keep = [root], [root]  # `keep` holds the nodes so that their ids stay unique
    while stack:
        node = stack.pop()
        for parent, _ in node.next_functions:
            if parent is None:
                continue
            readers[id(parent)] = readers.get(id(parent), 0) + 1
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
                keep.append(parent)
    return readers


def _reaches(node: Any, target: Any, readers: dict[int, int]) -> tuple[bool, bool]:
    """Whether ``node`` is ``target`` or derives from it only through per-unit single-reader
    ops; and whether a view/reshape (a flatten) was among them."""
    flattened = False
    for _ in range(_MAX_HOPS):
        if node is target:
            return True, flattened
        if node is None or not type(node).__name__.startswith(_PASSTHROUGH_NODES) or readers.get(id(node), 0) != 1:
            return False, flattened
        flattened = flattened or type(node).__name__.startswith(_FLATTENING_NODES)
        inputs = [parent for parent, _ in node.next_functions if parent is not None]
        if len(inputs) != 1:
            return False, flattened
        node = inputs[0]
    return False, flattened


def _wire(calls: list[_Call], at: int, readers: dict[int, int], dim: int) -> UnitWiring | str:
    act = calls[at]
    if act.out_shape is None or act.in_node is None:
        return "its input does not come from a trained layer"
    units = act.out_shape[dim]
    # Backwards: the producer, through per-unit modules only.
    norms: list[tuple[str, nn.Module]] = []
    wanted, j = act.in_node, at - 1
    while True:
        if j < 0:
            return "no layer runs before it"
        call = calls[j]
        if call.out_node is not wanted or readers.get(id(wanted), 0) != 1:
            return "its input is not the output of the module that ran just before it, or is also read elsewhere"
        if isinstance(call.module, _PRODUCERS):
            break
        if not isinstance(call.module, _BEFORE):
            return f"the module before it is a {type(call.module).__name__}, not a Linear/Conv layer"
        if isinstance(call.module, _NORMS):
            norms.append((call.name, call.module))
        wanted, j = call.in_node, j - 1
    producer = calls[j]
    out_size = producer.module.out_features if isinstance(producer.module, nn.Linear) else producer.module.out_channels
    if out_size != units or (isinstance(producer.module, _CONV) and dim != 1):
        return f"its units do not match the {out_size} outputs of `{producer.name}`"
    if any(m.num_features != units for _, m in norms):
        return "a normalisation layer in between does not match its units"
    # Forwards: the consumer, through dropout, pooling or a flatten only.
    source, k, flattened = act.out_node, at + 1, False
    if readers.get(id(source), 0) != 1:
        return "its output is read by more than one operation (a residual connection or a branch)"
    while True:
        if k >= len(calls):
            return "no layer reads it"
        call = calls[k]
        ok, via_view = _reaches(call.in_node, source, readers)
        if not ok:
            return "the next module does not read its output alone, through per-unit operations only"
        flattened = flattened or via_view or isinstance(call.module, nn.Flatten)
        if isinstance(call.module, _PRODUCERS):
            break
        if not isinstance(call.module, _AFTER):
            return f"the module after it is a {type(call.module).__name__}, not a Linear/Conv layer"
        source, k = call.out_node, k + 1
        if call.out_node is not call.in_node and readers.get(id(source), 0) != 1:
            return "an output on the way to the next layer is read elsewhere too"
    consumer = calls[k]
    columns = _columns_per_unit(consumer, units, dim, flattened, act.out_shape)
    if isinstance(columns, str):
        return columns
    return UnitWiring(producer.name, producer.module, consumer.name, consumer.module, norms[::-1], columns)


def _columns_per_unit(consumer: _Call, units: int, dim: int, flattened: bool,
                      act_shape: tuple[int, ...]) -> int | str:
    module = consumer.module
    if isinstance(module, _CONV):
        if module.groups != 1 or module.in_channels != units or flattened or dim != 1:
            return f"`{consumer.name}` does not read its units as plain input channels"
        return 1
    if not flattened:
        if module.in_features != units or dim != len(act_shape) - 1:
            return f"`{consumer.name}` does not read its units as input features"
        return 1
    shape = consumer.in_shape
    if (dim != 1 or shape is None or len(shape) != 2 or shape[0] != act_shape[0]
            or module.in_features % units != 0):
        return f"`{consumer.name}` reads a flattened view that cannot be mapped back to units"
    return module.in_features // units
