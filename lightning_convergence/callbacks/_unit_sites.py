"""Forward hooks on activation modules: one accumulator per call site, fed on sampled batches.

A *site* is one call of an activation module in a forward pass. A module used once is one site
named after the module (``features.1``); a module called several times per forward (one
``nn.ReLU`` shared by several layers) gives one site per call, in call order: ``act``, ``act#2``,
``act#3``. Each site has its own units, so a unit shared by two places in the graph is never
mixed up.

All sites' statistics are slots of one :class:`DeviceWindow` (``f"{site}/abs_sum"``,
``f"{site}/peak"``, ...), declared when a site first runs: a logging step reduces them across
ranks and reads them (with the producers' biases) in one transfer, and a checkpoint stores them
by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_convergence.callbacks._compiled_sites import (
    is_compiled,
    plain_name,
    register_observer,
    unregister_observer,
)
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.remedies.unit_wiring import UnitWiring, WiringProbe
from lightning_convergence.rules.unit_health import SiteWindow
from lightning_convergence.stats.activations import (
    ACTIVATION_KINDS,
    ActivationKind,
    UnitAccumulator,
    activation_kind,
    unit_dim,
)
from lightning_convergence.stats.window import AllReduce, DeviceWindow
from lightning_convergence.validation import check_positive_float

NOTHING_TO_TRACK = (
    "DeadNeuronTracker: nothing to track: the model has no activation modules ({known}). "
    "Activations called as functions inside forward (F.relu, torch.tanh, x.relu()) cannot be hooked; "
    "use module activations (nn.ReLU()), or name the modules whose outputs should be tracked with `include=[...]`."
)
NOTHING_RAN = (
    "DeadNeuronTracker: none of the {hooked} activation modules ran in a training forward so far: they may be "
    "defined but unused, with forward calling F.relu and the like, which cannot be hooked. Name the modules whose "
    "outputs to track with `include=[...]`."
)

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

    Raises:
        ValueError: ``eps`` is not in (0, 0.5).
        TypeError: ``unit_dims`` values are not ints, or ``include``/``exclude`` are not
            sequences of names.
    """

    def __init__(self, eps: float, unit_dims: dict[str, int] | None, include: Sequence[str], exclude: Sequence[str]):
        check_positive_float("saturation_eps", eps)
        if eps >= 0.5:
            raise ValueError(f"`saturation_eps` must be in (0, 0.5), got {eps!r}.")
        unit_dims = dict(unit_dims or {})
        for name, dim in unit_dims.items():
            if isinstance(dim, bool) or not isinstance(dim, int):
                raise TypeError(f"`unit_dims` values must be ints, got {dim!r} for {name!r}.")
        for arg, names in (("include", include), ("exclude", exclude)):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"`{arg}` must be a sequence of module names, got {names!r}.")
        self.eps = float(eps)
        self.unit_dims = unit_dims
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._warned_nothing_ran = False
        self.sites: dict[str, Site] = {}
        self.window = DeviceWindow()
        self.sampling = False
        self.probe = WiringProbe()
        self.wiring: dict[str, UnitWiring | str] | None = None  # per site, its wiring or why it has none
        self.problems: list[str] = []  # sites that could not be tracked, with the reason
        self._dropped: set[str] = set()  # sites whose unit count changed: their slot names are taken
        self._left_alone: set[str] = set()  # sites told to have units that cannot be revived
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        # (module, hook) of every module to track: registered for the whole fit under compile,
        # and only for the forward of sampled batches otherwise (see start_batch).
        self._hooks: list[tuple[nn.Module, Any]] = []
        self._calls: dict[str, int] = {}
        # This batch's statistics of every site, merged into the window in one update at the
        # batch's end (see flush): one merge per site cost more than its reduction.
        self._pending: dict[str, Tensor] = {}
        self._keys: list[int] = []  # this tracker's observers for compiled regions
        self._token = torch.zeros(())  # see _compiled_sites: keeps the op in compiled graphs
        self.compiled = False  # some of the model runs through torch.compile (set by attach)

    def modules(self, model: nn.Module) -> list[tuple[str, nn.Module, str]]:
        """``(name, module, activation class name)`` of everything to hook, in model order.

        Names leave out the ``_orig_mod`` level of compiled submodules, as the user wrote them."""
        found = []
        for name, module in model.named_modules():
            name = plain_name(name)
            if name in self.exclude:
                continue
            if activation_kind(module) is not None or name in self.include:
                found.append((name, module, type(module).__name__))
        return found

    def attach(self, model: nn.Module) -> int:
        """Hook every activation module (replacing any earlier hooks); returns how many were
        hooked, and warns when there is nothing to hook."""
        self.detach()
        self.compiled = is_compiled(model)
        # The token lives where the activations are: a CPU token in a CUDA graph would keep
        # inductor from using CUDA graphs.
        self._token = torch.zeros((), device=next(model.parameters(), torch.zeros(())).device)
        found = self.modules(model)
        missing = sorted(set(self.include) - {name for name, _, _ in found})
        if missing:
            raise ValueError(f"`include` names modules that the model does not have: {missing}.")
        self._hooks = [(module, self._hook(name, module)) for name, module, _ in found]
        if self.compiled:  # adding and removing hooks would recompile the compiled regions
            self._register()
        if not found:
            known = ", ".join(cls.__name__ for cls in ACTIVATION_KINDS)
            rank_zero_warn(NOTHING_TO_TRACK.format(known=known), category=ConvergenceWarning)
        return len(found)

    def _register(self) -> None:
        if not self._handles:
            self._handles = [module.register_forward_hook(hook) for module, hook in self._hooks]

    def _unregister(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def detach(self) -> None:
        self._unregister()
        self._hooks = []
        for key in self._keys:
            unregister_observer(key)
        self._keys = []
        self.probe.detach()
        self.probe.clear()

    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    @property
    def batches(self) -> int:
        """The fewest sampled batches any site holds in this window (0 without sites)."""
        return min((site.accumulator.batches for site in self.sites.values()), default=0)

    def start_batch(self, sampled: bool) -> None:
        """Begin a training batch. In eager mode the hooks are on the modules only while a sampled
        batch runs: on the other steps a module without hooks takes torch's fast call path."""
        self.flush()  # what a forward that never reached its batch's end left (a fault)
        self.sampling = sampled
        self._calls = {}
        if sampled:
            self._register()

    def end_batch(self) -> None:
        """Stop sampling and merge the batch into the window; warn about the sites that could
        not be tracked in this batch, and once about hooked modules none of which has run yet."""
        self.sampling = False
        self.flush()
        if not self.compiled:
            self._unregister()
        for problem in self.problems:
            rank_zero_warn(f"DeadNeuronTracker: not tracked: {problem}.", category=ConvergenceWarning)
        self.problems.clear()

    def warn_if_nothing_ran(self) -> None:
        """Warn (once) when modules are hooked but none has run in a sampled training forward."""
        if self._hooks and not self.sites and not self._warned_nothing_ran:
            self._warned_nothing_ran = True
            rank_zero_warn(NOTHING_RAN.format(hooked=len(self._hooks)), category=ConvergenceWarning)

    def _hook(self, module_name: str, module: nn.Module):
        # Inside a compiled region the hook hands the activation to one opaque op and decides
        # nothing (see _compiled_sites): what it read would become a guard and recompile.
        key = register_observer(lambda output: self._observe(module_name, module, output))
        self._keys.append(key)
        token = self._token

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            if torch.compiler.is_compiling():
                torch.ops.lightning_convergence.observe_activation(output.detach(), token, key)
            else:
                self._observe(module_name, module, output)

        return hook

    def _observe(self, module_name: str, module: nn.Module, output: Tensor) -> None:
        """One call of a hooked module: its output into its site's window, when sampling."""
        if not self.sampling or not module.training:
            return
        index = self._calls.get(module_name, 0)
        self._calls[module_name] = index + 1
        name = module_name if index == 0 else f"{module_name}#{index + 1}"
        site = self.sites.get(name)
        if site is None:
            site = None if name in self._dropped else self._new_site(name, module_name, index, module, output)
            if site is None:
                return
        try:
            self._pending.update(site.accumulator.batch_slots(output))
        except ValueError as error:  # the unit count changed: the site cannot be tracked
            self.problems.append(f"`{name}`: {error}")
            self._dropped.add(name)
            del self.sites[name]

    def flush(self) -> None:
        """Merge the statistics of the batch so far into the window: one update for every site
        (a concatenation and a merge per reduction kind), on the device."""
        if self._pending:
            pending, self._pending = self._pending, {}
            self.window.update(**pending)

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
        accumulator = UnitAccumulator(kind, dim, self.eps, self.window, prefix=f"{name}/")
        site = self.sites[name] = Site(name, module_name, index, type(module).__name__, accumulator)
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
        """Move the window (restored from a checkpoint on the CPU) to ``device``."""
        self.window.allocate(device)

    def unit_dims_by_site(self) -> dict[str, int]:
        return {name: site.accumulator.dim for name, site in self.sites.items()}

    def site_calls(self) -> dict[str, tuple[str, int]]:
        return {name: (site.module_name, site.call_index) for name, site in self.sites.items()}

    def resolve_wiring(self, loss: Tensor, say_skipped: bool = False,
                       refuse: str | None = None) -> dict[str, UnitWiring | str]:
        """Each site's wiring, from the autograd graph of the probed forward (reads the graph
        only; nothing in training changes). The probe is removed. With ``say_skipped``, says
        which sites' units cannot be re-initialised, and why; with ``refuse``, no site's units
        are, for that reason (the graph is not read)."""
        self.probe.detach()
        if refuse is not None:
            self.wiring = {name: refuse for name in self.sites}
        else:
            self.wiring = self.probe.resolve(loss, self.site_calls(), self.unit_dims_by_site())
        self.probe.clear()
        for name, link in self.wiring.items():
            if say_skipped and isinstance(link, str):
                rank_zero_info(f"DeadNeuronTracker: units of `{name}` will not be re-initialised: {link}.")
        return self.wiring

    def say_left_alone(self, name: str, units: list[int]) -> None:
        """Say (once per site) that its units qualify for ReDo but stay as they are, and why."""
        if name not in self._left_alone:
            self._left_alone.add(name)
            reason = (self.wiring or {}).get(name) or "its wiring was not recorded"
            rank_zero_info(f"DeadNeuronTracker: {len(units)} dead units in `{name}` left as they are: {reason}.")

    # ----------------------------------------------------------------- logging steps

    def read(self, all_reduce: AllReduce | None = None) -> list[SiteWindow]:
        """Every site's window as host numbers, in one transfer with the producers' biases.

        With ``all_reduce`` the window is first merged over ranks (one collective per reduction
        kind; every rank must call this at the same step with the same sites).
        """
        self.flush()
        if all_reduce is not None:
            self.window.reduce_across(all_reduce)
        wiring = self.wiring or {}
        biases = {}
        for name in self.sites:
            bias = getattr(getattr(wiring.get(name), "producer", None), "bias", None)
            if isinstance(bias, Tensor):
                biases[f"{name}/bias"] = bias.detach()
        values = self.window.read(extra=biases)  # note: a device-to-host sync point
        windows = []
        for name, site in self.sites.items():
            acc, link = site.accumulator, wiring.get(name)
            peak, abs_sum, saturated, count = acc.host_lists(values)
            windows.append(SiteWindow(
                name, site.activation, acc.kind, peak, abs_sum, saturated, count, acc.batches,
                producer=link.producer_name if isinstance(link, UnitWiring) else None,
                bias=values.get(f"{name}/bias"), redo_skipped=link if isinstance(link, str) else None))
        return windows

    def reset(self) -> None:
        """Start a new window for every site."""
        self._pending = {}
        self.window.reset()
        for site in self.sites.values():
            site.accumulator.batches = 0

    # ----------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        """Each site's description and host count, and the window by slot name."""
        self.flush()
        sites = {name: {"module_name": site.module_name, "call_index": site.call_index, "activation": site.activation,
                        "kind": site.accumulator.kind, "dim": site.accumulator.dim, "units": site.accumulator.units,
                        "batches": site.accumulator.batches}
                 for name, site in self.sites.items()}
        return {"sites": sites, "window": self.window.state_dict()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Restore :meth:`state_dict`, or the older form: one entry per site with its tensors."""
        sites, window = (state["sites"], state["window"]) if "window" in state else (state, _window_of_old_sites(state))
        self.sites, self._dropped, self.window, self._pending = {}, set(), DeviceWindow(), {}
        for name, s in sites.items():
            acc = UnitAccumulator(s["kind"], int(s["dim"]), self.eps, self.window, prefix=f"{name}/")
            if s["units"] is not None:
                acc.declare(int(s["units"]))
            acc.batches = int(s["batches"])
            self.sites[name] = Site(name, s["module_name"], int(s["call_index"]), s["activation"], acc)
        self.window.load_state_dict(window, device)


def _window_of_old_sites(state: dict) -> dict[str, Tensor]:
    """The window slots held by a checkpoint written before the window was declared."""
    window = {}
    for name, s in state.items():
        for stat in ("peak", "abs_sum", "saturated"):
            if s.get(stat) is not None:
                window[f"{name}/{stat}"] = s[stat].double()
        window[f"{name}/values"] = torch.tensor(float(s.get("values_per_unit", 0)), dtype=torch.float64)
    return window
