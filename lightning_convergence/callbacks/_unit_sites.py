"""Forward hooks on activation modules: one accumulator per call site, fed on sampled batches.

A *site* is one call of an activation module in a forward pass. A module used once is one site
named after the module (``features.1``); a module called several times per forward (one
``nn.ReLU`` shared by several layers) gives one site per call, in call order: ``act``, ``act#2``,
``act#3``. Each site has its own units, so a unit shared by two places in the graph is never
mixed up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_convergence.remedies.unit_wiring import WiringProbe
from lightning_convergence.stats.activations import ActivationKind, UnitAccumulator, activation_kind, unit_dim

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class Site:
    name: str
    module_name: str
    call_index: int
    activation: str  # the module's class name
    accumulator: UnitAccumulator


class UnitSites:
    """Registers the hooks, names the sites and feeds their accumulators.

    Args:
        eps: saturation distance from a flat end.
        unit_dims: per module name, the unit dimension to use instead of the rule.
        include: names of further modules whose outputs are treated as activations that can
            die (for example a custom block ending in ``F.relu``).
        exclude: names of activation modules to leave alone.
    """

    def __init__(self, eps: float, unit_dims: dict[str, int], include: tuple[str, ...], exclude: tuple[str, ...]):
        self.eps = eps
        self.unit_dims = unit_dims
        self.include = include
        self.exclude = exclude
        self.sites: dict[str, Site] = {}
        self.sampling = False
        self.probe = WiringProbe()
        self.problems: list[str] = []  # sites that could not be tracked, with the reason
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._calls: dict[str, int] = {}

    def modules(self, model: nn.Module) -> list[tuple[str, nn.Module, str]]:
        """``(name, module, activation class name)`` of everything to hook, in model order."""
        found = []
        for name, module in model.named_modules():
            if name in self.exclude:
                continue
            if activation_kind(module) is not None or name in self.include:
                found.append((name, module, type(module).__name__))
        return found

    def attach(self, model: nn.Module) -> int:
        """Hook every activation module; returns how many were hooked."""
        self.detach()
        found = self.modules(model)
        missing = sorted(set(self.include) - {name for name, _, _ in found})
        if missing:
            raise ValueError(f"`include` names modules that the model does not have: {missing}.")
        for name, module, _ in found:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return len(found)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.probe.detach()
        self.probe.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def start_batch(self, sampled: bool) -> None:
        self.sampling = sampled
        self._calls = {}

    def _hook(self, module_name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self.sampling or not module.training or not isinstance(output, Tensor):
                return
            index = self._calls.get(module_name, 0)
            self._calls[module_name] = index + 1
            name = module_name if index == 0 else f"{module_name}#{index + 1}"
            site = self.sites.get(name)
            if site is None:
                site = self._new_site(name, module_name, index, module, output)
                if site is None:
                    return
            try:
                site.accumulator.update(output)
            except ValueError as error:  # the unit count changed: the site cannot be tracked
                self.problems.append(f"`{name}`: {error}")
                del self.sites[name]

        return hook

    def _new_site(self, name: str, module_name: str, index: int, module: nn.Module, output: Tensor) -> Site | None:
        kind: ActivationKind = activation_kind(module) or "signed"
        if module_name in self.unit_dims:
            dim = self.unit_dims[module_name]
            if not -output.dim() <= dim < max(output.dim(), 1):
                self.problems.append(f"`{name}`: unit_dims gives {dim} for an output of shape {tuple(output.shape)}")
                return None
            dim %= max(output.dim(), 1)
        else:
            dim = unit_dim(output, after_conv=self._after_conv(output))
        site = self.sites[name] = Site(name, module_name, index, type(module).__name__,
                                       UnitAccumulator(kind, dim, self.eps))
        return site

    def _after_conv(self, output: Tensor) -> bool:
        """Channels first? Sure for 4-d and 5-d outputs; for 3-d ones (Conv1d's ``[N, C, L]``
        or a sequence's ``[N, L, D]``) the layer that ran last before it decides, when the
        wiring probe recorded it; without that record the last dimension is taken."""
        if output.dim() >= 4:
            return True
        if output.dim() != 3:
            return False
        for call in reversed(self.probe.calls[:-1]):
            if any(True for _ in call.module.parameters(recurse=False)):
                return isinstance(call.module, _CONV)
        return False

    def to(self, device: torch.device) -> None:
        for site in self.sites.values():
            acc = site.accumulator
            for attr in ("_peak", "_abs_sum", "_saturated"):
                value = getattr(acc, attr)
                if value is not None:
                    setattr(acc, attr, value.to(device))

    def unit_dims_by_site(self) -> dict[str, int]:
        return {name: site.accumulator.dim for name, site in self.sites.items()}

    def site_calls(self) -> dict[str, tuple[str, int]]:
        return {name: (site.module_name, site.call_index) for name, site in self.sites.items()}

    def state_dict(self) -> dict:
        state = {}
        for name, site in self.sites.items():
            acc = site.accumulator
            activity = acc.activity() if acc.batches else None
            state[name] = {
                "module_name": site.module_name, "call_index": site.call_index, "activation": site.activation,
                "kind": acc.kind, "dim": acc.dim, "units": acc.units, "batches": acc.batches,
                "values_per_unit": acc.values_per_unit,
                "peak": None if activity is None or acc.kind == "nonnegative" or acc._peak is None else acc._peak.cpu(),
                "abs_sum": None if activity is None else activity.abs_sum.cpu(),
                "saturated": None if acc._saturated is None else acc._saturated.cpu(),
            }
        return state

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.sites = {}
        for name, s in state.items():
            acc = UnitAccumulator(s["kind"], int(s["dim"]), self.eps)
            acc.units = s["units"]
            acc.batches = int(s["batches"])
            acc.values_per_unit = int(s["values_per_unit"])
            acc._peak = None if s["peak"] is None else s["peak"].to(device)
            acc._abs_sum = None if s["abs_sum"] is None else s["abs_sum"].to(device)
            acc._saturated = None if s["saturated"] is None else s["saturated"].to(device)
            self.sites[name] = Site(name, s["module_name"], int(s["call_index"]), s["activation"], acc)
