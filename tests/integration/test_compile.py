"""torch.compile: the suite costs no graph break and no extra graph, and watching changes nothing.

The network is compiled in ``configure_model`` (or the whole LightningModule by Lightning). Dynamo's
counters (``counters["stats"]["unique_graphs"]``, ``counters["graph_break"]``) are read after a
short fit with and without the suite. Before the fix the digits MLP went from 2 graphs to 12 with
4 graph breaks (DeadNeuronTracker's sampling flag and wiring probe, GradientNormMonitor's
forward-order hooks).

The fast tests use ``backend="aot_eager"`` (dynamo and AOT autograd, no code generation); the
inductor test is marked slow (it compiles C++ kernels: about 10 s a fit on 2 CPU cores).
"""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

from lightning_convergence import DeadNeuronTracker, default_callbacks
from lightning_convergence.callbacks._compiled_sites import is_compiled
from tests.helpers.models import DigitsMLP, trainer_kwargs

STEPS = 12


class CompiledMLP(DigitsMLP):
    """The digits MLP, its network compiled in ``configure_model``, with dropout (RNG in the graph)."""

    def __init__(self, backend: str = "aot_eager"):
        super().__init__(n=32 * STEPS, shuffle=False, optimizer="adam", lr=1e-3, dropout=0.1)
        self.backend = backend

    def configure_model(self):
        if not is_compiled(self.net):
            self.net = torch.compile(self.net, backend=self.backend)


class UnloggedMLP(DigitsMLP):
    """For Lightning's whole-module compile, whose dynamo trace of ``training_step`` fails inside
    ``self.log`` on torch 2.13 with Lightning 2.6.6 (``inspect`` of a bound method), with or
    without the suite."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)


def _fit(tmp_path, model: L.LightningModule, callbacks: list, compile_module: str | None = None
         ) -> tuple[torch.Tensor, int, int]:
    """Final weights, compiled graphs and graph breaks of one fit, from a fresh dynamo."""
    torch._dynamo.reset()
    counters.clear()
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=False, log_every_n_steps=4))
    trainer.fit(torch.compile(model, backend=compile_module) if compile_module else model)
    weights = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    return weights, counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def _observing(**dead_neuron_args) -> list:
    # Sampling every 2nd step flips the tracker's flag often: each flip recompiled before.
    return default_callbacks(log_every_n_steps=4, DeadNeuronTracker={"sample_every_n_steps": 2, "min_batches": 2,
                                                                     **dead_neuron_args})


def _tracker(callbacks: list) -> DeadNeuronTracker:
    return next(c for c in callbacks if isinstance(c, DeadNeuronTracker))


def _compare(tmp_path, backend: str) -> None:
    L.seed_everything(0, verbose=False)
    bare, bare_graphs, bare_breaks = _fit(tmp_path / "bare", CompiledMLP(backend), [])
    callbacks = _observing()
    L.seed_everything(0, verbose=False)
    watched, graphs, breaks = _fit(tmp_path / "suite", CompiledMLP(backend), callbacks)
    assert (bare_graphs, bare_breaks) == (2, 0)  # training and validation
    assert breaks == 0
    assert graphs <= bare_graphs + 1  # the goal; measured: no extra graph at all
    assert graphs == bare_graphs
    assert torch.equal(watched, bare)  # bit-identical: watching changes nothing
    # And the tracker did watch, through the compiled graph, under the plain names.
    tracker = _tracker(callbacks)
    assert sorted(tracker._sites.sites) == ["net.1", "net.4"]
    assert tracker._last_evaluated > 0


def test_observing_suite_adds_no_graph_and_no_break_and_is_bit_identical(tmp_path):
    _compare(tmp_path, "aot_eager")


@pytest.mark.slow
def test_observing_suite_under_inductor(tmp_path):
    _compare(tmp_path, "inductor")


def test_whole_lightning_module_compiled_by_lightning(tmp_path):
    """``trainer.fit(torch.compile(model))``: Lightning compiles the module's forward."""
    L.seed_everything(0, verbose=False)
    bare, bare_graphs, _ = _fit(tmp_path / "bare", UnloggedMLP(n=32 * STEPS, shuffle=False, val=False), [],
                                compile_module="aot_eager")
    callbacks = _observing()
    L.seed_everything(0, verbose=False)
    watched, graphs, breaks = _fit(tmp_path / "suite", UnloggedMLP(n=32 * STEPS, shuffle=False, val=False), callbacks,
                                   compile_module="aot_eager")
    assert breaks == 0 and graphs == bare_graphs
    assert torch.equal(watched, bare)
    assert _tracker(callbacks)._last_evaluated > 0


def test_acting_suite_refuses_redo_under_compile_without_breaking_the_graph(tmp_path, caplog):
    callbacks = default_callbacks(auto_remediate=True, log_every_n_steps=4,
                                  DeadNeuronTracker={"sample_every_n_steps": 2, "min_batches": 2})
    L.seed_everything(0, verbose=False)
    with caplog.at_level(logging.INFO):
        _, graphs, breaks = _fit(tmp_path, CompiledMLP(), callbacks)
    assert breaks == 0 and graphs == 2
    wiring = _tracker(callbacks)._sites.wiring
    assert wiring and all("torch.compile" in reason for reason in wiring.values())
    assert "will not be re-initialised" in caplog.text and "torch.compile" in caplog.text


def test_eager_hooks_do_not_use_the_op(tmp_path, monkeypatch):
    """Without compile the hook runs the observer directly, as before (the op is never called)."""
    calls = []
    monkeypatch.setattr("lightning_convergence.callbacks._compiled_sites._OBSERVERS",
                        _CountingDict(calls))
    callbacks = _observing()
    L.seed_everything(0, verbose=False)
    _fit(tmp_path, DigitsMLP(n=32 * 4, shuffle=False), callbacks)
    assert calls == []
    assert sorted(_tracker(callbacks)._sites.sites) == ["net.1", "net.3"]


class _CountingDict(dict):
    def __init__(self, calls: list):
        super().__init__()
        self.calls = calls

    def get(self, key, default=None):
        self.calls.append(key)
        return super().get(key, default)


def test_the_op_survives_inductor_dead_code_elimination():
    """An op without outputs is dropped by inductor unless it mutates something: the token."""
    from lightning_convergence.callbacks._compiled_sites import register_observer, unregister_observer

    seen: list[tuple[int, ...]] = []
    key = register_observer(lambda x: seen.append(tuple(x.shape)))
    token = torch.zeros(())
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def hook(module, args, output):
        torch.ops.lightning_convergence.observe_activation(output.detach(), token, key)

    net[1].register_forward_hook(hook)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager")
    for _ in range(2):
        compiled(torch.randn(3, 4)).sum().backward()
    unregister_observer(key)
    assert seen == [(3, 8), (3, 8)]
