"""PlateauAdvisor's rollback point beyond ``max_snapshot_bytes``: a checkpoint on disk, restored exactly."""

import os

import lightning as L
import pytest
import torch

from lightning_convergence import PlateauAdvisor
from lightning_convergence.recorder.console import ConvergenceWarning
from tests.callbacks.test_plateau_advisor import BlowsUp, fit, interventions


class WatchRollbacks(L.Callback):
    """After the advisor (listed before it): the weights at each rollback point, and after each
    rollback whether the weights are exactly those."""

    def __init__(self, advisor: PlateauAdvisor):
        self.advisor, self.at_step, self.checked, self.where, self.paths = advisor, {}, 0, set(), set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        point = self.advisor._snapshot
        rolled = interventions(self.advisor, trainer, "rollback")
        if len(rolled) > self.checked:
            self.checked = len(rolled)
            expected = self.at_step[point.step]
            assert all(torch.equal(p, e) for p, e in zip(pl_module.parameters(), expected))
        if point.taken and point.step not in self.at_step:
            self.where.add(point.where)
            self.paths.add(point.path)
            assert not point.memory.taken or point.where == "memory"  # host memory only below the limit
            self.at_step[point.step] = [p.detach().clone() for p in pl_module.parameters()]


def _run(tmp_path, max_snapshot_bytes):
    L.seed_everything(0, verbose=False)
    advisor = PlateauAdvisor(auto_remediate=True, monitor=None, max_recoveries=2,
                             max_snapshot_bytes=max_snapshot_bytes)
    watch = WatchRollbacks(advisor)
    model = BlowsUp(lr=0.05, optimizer="adam")
    with pytest.warns(ConvergenceWarning, match="not recovering"):
        trainer = fit(tmp_path, model, [advisor, watch], max_epochs=20, log_every_n_steps=5)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return advisor, watch, trainer, weights


def test_a_tiny_limit_rolls_back_from_disk_exactly_as_from_memory(tmp_path):
    memory, memory_watch, memory_trainer, memory_weights = _run(tmp_path / "memory", None)
    disk, disk_watch, disk_trainer, disk_weights = _run(tmp_path / "disk", 1)
    assert memory_watch.where == {"memory"} and disk_watch.where == {"disk"}
    assert disk_watch.checked == 2  # both rollbacks came from the file, each exactly
    (path,) = disk_watch.paths  # one file, overwritten by each new rollback point
    assert os.path.isfile(path) and path.startswith(str(tmp_path / "disk" / "rollback"))
    assert interventions(memory, memory_trainer) == interventions(disk, disk_trainer)
    assert torch.equal(memory_weights, disk_weights)  # optimizer state restored too, LR kept


def test_without_a_checkpoint_it_says_so_once_and_does_not_roll_back(tmp_path, monkeypatch):
    monkeypatch.setattr("lightning_convergence.callbacks.plateau_advisor.save_rollback_checkpoint",
                        lambda trainer, path: None)  # the write failed (disk full, ...)
    L.seed_everything(0, verbose=False)
    advisor = PlateauAdvisor(auto_remediate=True, monitor=None, max_recoveries=2, max_snapshot_bytes=1)
    with pytest.warns(ConvergenceWarning) as caught:
        trainer = fit(tmp_path, BlowsUp(lr=0.05), [advisor], max_epochs=20, log_every_n_steps=5)
    said = [str(w.message) for w in caught if "no rollback" in str(w.message)]
    assert len(said) == 1 and "max_snapshot_bytes" in said[0]
    assert interventions(advisor, trainer, "rollback") == []
    assert interventions(advisor, trainer, "lr_scale")  # the other remedies went ahead


@pytest.mark.parametrize("value, error", [(0, ValueError), (-5, ValueError), ("1GB", TypeError),
                                          (1.5, TypeError), (True, TypeError)])
def test_max_snapshot_bytes_is_checked_at_construction(value, error):
    with pytest.raises(error, match="max_snapshot_bytes"):
        PlateauAdvisor(max_snapshot_bytes=value)
