"""The in-run learning-rate range test: exact restore, the same decision on every DDP rank, the
same pick as Lightning's ``Tuner.lr_find`` under Lightning's rule, and a run 10,000x too low
recovered by PlateauAdvisor."""

from __future__ import annotations

import copy
import json
import math
import os
import random
from datetime import timedelta

import lightning as L
import numpy
import pytest
import torch
from torch import nn

from lightning_convergence import PlateauAdvisor
from lightning_convergence.callbacks._context import run_context
from lightning_convergence.callbacks._range_test import InRunRangeTest
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.remedies.lr_range_test import RangeTestPlan, suggest
from tests.helpers.models import DigitsMLP, trainer_kwargs


class NormDropMLP(DigitsMLP):
    """BatchNorm (running statistics), dropout (the RNG) and a StepLR stepped per batch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _state(trainer, pl_module) -> dict:
    """Everything the probe must put back, copied."""
    return {
        "model": copy.deepcopy(pl_module.state_dict()),
        "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
        "schedulers": [copy.deepcopy(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs],
        "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "numpy_rng": numpy.random.get_state(),
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, numpy.ndarray):
        return bool(numpy.array_equal(a, b))
    return a == b


class Probe(ConvergenceCallback):
    """Starts one range test at the end of step ``at`` and keeps what it saw."""

    def __init__(self, at: int, plan: RangeTestPlan, out_dir: str | None = None):
        super().__init__(auto_remediate=True)
        self.at, self.test, self.out_dir = at, InRunRangeTest(plan), out_dir
        self.result = self.before = self.after = None
        self.changed_during = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.test.running:
            if not self.changed_during:  # the probe's steps do change the weights
                self.changed_during = not _same(pl_module.state_dict(), self.before["model"])
            assert run_context(trainer).probing
            result = self.test.observe(trainer, pl_module, outputs)
            if result is not None:
                self.result, self.after = result, _state(trainer, pl_module)
        elif self.result is None and trainer.global_step == self.at:
            self.before = _state(trainer, pl_module)
            self.test.start(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        if self.out_dir is not None:
            weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
            with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as handle:
                json.dump({"detail": self.result.detail(), "pick": self.result.pick,
                           "checksum": float(weights.double().sum()), "step": trainer.global_step}, handle)

    def _remove_hooks(self):
        self.test.cancel()


def test_restore_after_the_probe_is_exact_weights_buffers_optimizer_scheduler_and_rng(tmp_path):
    L.seed_everything(0, verbose=False)
    probe = Probe(at=4, plan=RangeTestPlan(1.0, 1e4, num_steps=8))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=False, max_epochs=2), callbacks=[probe])
    trainer.fit(NormDropMLP(lr=0.01))
    assert probe.result is not None and len(probe.result.lrs) >= 5
    assert probe.changed_during  # the probe trained for real ...
    assert _same(probe.before, probe.after)  # ... and everything came back, bit for bit
    assert not run_context(trainer).probing
    assert all(not c._owners for c in run_context(trainer)._lr_controls.values())  # no factor of ours left


def test_a_fit_that_ends_during_the_probe_ends_with_the_state_from_before_it(tmp_path):
    L.seed_everything(0, verbose=False)
    probe = Probe(at=4, plan=RangeTestPlan(1.0, 1e4, num_steps=30))
    model = NormDropMLP(lr=0.01)
    L.Trainer(**trainer_kwargs(tmp_path, logger=False, max_steps=10), callbacks=[probe]).fit(model)
    assert probe.result is None  # it never finished ...
    assert _same(model.state_dict(), probe.before["model"])  # ... and its steps were undone


def test_without_probing_the_same_state_differs(tmp_path):
    """The comparison above can fail: two states 8 steps apart are not the same."""
    L.seed_everything(0, verbose=False)

    class Keep(L.Callback):
        states = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step in (4, 12):
                self.states[trainer.global_step] = _state(trainer, pl_module)

    keep = Keep()
    L.Trainer(**trainer_kwargs(tmp_path, logger=False, max_epochs=1), callbacks=[keep]).fit(NormDropMLP(lr=0.01))
    assert not _same(keep.states[4], keep.states[12])


@pytest.mark.distributed
def test_every_ddp_rank_takes_the_same_decision(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    L.seed_everything(0, verbose=False)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=4, devices=2, strategy=strategy)  # 32 steps
    kwargs.pop("deterministic")
    probe = Probe(at=2, plan=RangeTestPlan(1.0, 1e4, num_steps=20), out_dir=str(tmp_path))
    L.Trainer(callbacks=[probe], **kwargs).fit(DigitsMLP(lr=1e-3))
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["detail"] == ranks[1]["detail"] and ranks[0]["pick"] is not None
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # and the weights are still the same after it


class FromStart(Probe):
    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self.before = _state(trainer, pl_module)
        self.test.start(trainer, pl_module)


def test_under_lightnings_rule_the_pick_agrees_with_tuner_lr_find(tmp_path):
    """Differential: the same fresh model, data and schedule of learning rates, the curve read
    with Lightning's rule. Lightning's ``_ExponentialLR`` gives its k-th step
    ``min * ratio ** ((k + 1) / N)`` from the second step on (the plan here: ``** (k / (N - 1))``),
    so the two curves are read at learning rates up to one grid step apart; the picks must agree
    within one grid step. (The default rule reads the curve differently, on purpose: see
    ``remedies.lr_range_test``; its pick is checked against the outcome in the next test.)"""
    from lightning.pytorch.tuner import Tuner

    lo, hi, steps = 1e-5, 1.0, 60
    L.seed_everything(0, verbose=False)
    model = DigitsMLP(lr=lo, n=1797)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=False, max_epochs=3))
    finder = Tuner(trainer).lr_find(model, min_lr=lo, max_lr=hi, num_training=steps, early_stop_threshold=4.0)
    theirs = finder.suggestion()

    L.seed_everything(0, verbose=False)
    model = DigitsMLP(lr=lo, n=1797)
    plan = RangeTestPlan(1.0, hi / lo, num_steps=steps, beta=0.98)
    probe = FromStart(at=-1, plan=plan)
    L.Trainer(**trainer_kwargs(tmp_path / "ours", logger=False, max_epochs=3), callbacks=[probe]).fit(model)
    ours = suggest(probe.test.last_curve, "lightning", skip_begin=10)
    step = plan.grid_step
    assert ours.pick is not None and theirs is not None
    assert abs(math.log(ours.pick * lo) - math.log(theirs)) <= math.log(step) * 1.01, (ours.pick * lo, theirs)


def test_plateau_advisor_recovers_a_run_10000x_too_low_with_the_range_test(tmp_path):
    """Adam at 1e-7 on the digits MLP, whose usual rate is 1e-3: no learning, the update ratio
    names the learning rate, the probe picks a rate near the usual one, and the run ends within
    1.5x of the run at 1e-3 (the label comes from that run's outcome)."""
    def run(lr, callbacks, root):
        L.seed_everything(0, verbose=False)
        model = DigitsMLP(lr=lr, optimizer="adam", n=1797, batch_size=64)
        trainer = L.Trainer(**trainer_kwargs(root, logger=False, max_epochs=12), callbacks=callbacks)
        trainer.fit(model)
        return float(trainer.callback_metrics["val_loss"]), trainer

    reference, _ = run(1e-3, [], tmp_path / "ref")
    advisor = PlateauAdvisor(auto_remediate=True, log_every_n_steps=10)
    from lightning_convergence import GradientNormMonitor

    remedied, trainer = run(1e-7, [GradientNormMonitor(log_every_n_steps=10), advisor], tmp_path / "low")
    scales = [i for i in advisor._records_state(trainer)["interventions"] if i["action"] == "lr_scale"]
    probed = [i for i in scales if i["detail"]["reason"] == "lr_range_test"]
    assert probed and probed[0]["detail"]["range_pick"] > 1000  # a raise of three decades or more
    assert len(probed[0]["detail"]["range_losses"]) == len(probed[0]["detail"]["range_lrs"])
    assert remedied <= 1.5 * reference, (remedied, reference)


def test_after_a_divergence_the_cut_comes_from_a_downward_probe_from_the_rollback(tmp_path):
    """SGD at 10 on the digits MLP (its usual rate is 0.05) diverges at once. Observed, the run
    never learns; acting, PlateauAdvisor rolls back to the first weights and, instead of the
    fixed tenfold cut (still 20x too high), probes from 1e-4x the rate up to the rate itself
    from there: its pick is a cut of two decades or more, and the run learns."""
    def run(callbacks, root):
        L.seed_everything(0, verbose=False)
        trainer = L.Trainer(**trainer_kwargs(root, logger=False, max_epochs=12), callbacks=callbacks)
        trainer.fit(DigitsMLP(lr=10.0))
        return float(trainer.callback_metrics["val_loss"]), trainer

    observed, _ = run([], tmp_path / "observed")
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=10)
    remedied, trainer = run([advisor], tmp_path / "acting")
    found = advisor._records_state(trainer)["interventions"]
    assert [(i["action"], i["detail"]["reason"]) for i in found] == [("rollback", "divergence"),
                                                                      ("lr_scale", "lr_range_test")]
    rollback, cut = found
    assert rollback["detail"]["to_step"] == 0 and cut["detail"]["direction"] == "down"
    assert cut["detail"]["probe_start_step"] == rollback["step"] + 1  # the next step: the first probed
    assert 1e-4 <= cut["detail"]["factor"][0] <= 1e-2
    assert len(cut["detail"]["range_lrs"]) == len(cut["detail"]["range_losses"]) >= 5
    assert not math.isfinite(observed) or observed > 2.0  # observed: never learns (or NaN)
    assert remedied < 0.5, (remedied, observed)


def test_validation_and_checkpoints_inside_a_probe_see_the_state_before_it(tmp_path):
    """PlateauAdvisor's probe starts at step 50 (no learning at 1e-7) and runs across the
    validation at the end of the second epoch, which sees the weights from before it; the
    checkpoints written inside it (every 5 steps) hold that state too, not the probe's weights."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_convergence import GradientNormMonitor

    class ValWeights(L.Callback):
        seen: dict = {}

        def on_validation_start(self, trainer, pl_module):
            self.seen[trainer.global_step] = copy.deepcopy(pl_module.state_dict())

    L.seed_everything(0, verbose=False)
    model = DigitsMLP(lr=1e-7, optimizer="adam", n=1797, batch_size=64)  # 29 steps per epoch
    advisor, seen = PlateauAdvisor(auto_remediate=True, log_every_n_steps=10), ValWeights()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1, filename="{step}")
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=8, enable_checkpointing=True)
    trainer = L.Trainer(**kwargs, callbacks=[GradientNormMonitor(log_every_n_steps=10), advisor, seen, checkpoints])
    trainer.fit(model)
    probed = [i for i in advisor._records_state(trainer)["interventions"] if i["detail"].get("reason") == "lr_range_test"]
    start, end = probed[0]["detail"]["probe_start_step"], probed[0]["step"]
    validations = [step for step in seen.seen if start < step < end]
    saved = [step for step in range(start + 1, end) if step % 5 == 0]
    assert start == 50 and validations and len(saved) >= 2  # validation and checkpoints inside the probe
    inside = [torch.load(tmp_path / "ckpt" / f"step={s}.ckpt", weights_only=False)["state_dict"] for s in saved]
    assert all(_same(inside[0], other) for other in inside[1:])  # all hold the state from before the probe ...
    assert _same(seen.seen[validations[0]], inside[0])  # ... which validation saw too
