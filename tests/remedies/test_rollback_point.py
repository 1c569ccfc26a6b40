"""RollbackPoint: what a snapshot would hold, and memory or disk by the limit (no Trainer)."""

import pytest
import torch
from torch import nn

from lightning_convergence.remedies.rollback_point import RollbackPoint, state_bytes


def _adam_model():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_state_bytes_is_about_three_times_the_parameters_with_adam():
    model, optimizer = _adam_model()
    params = sum(p.numel() * 4 for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    steps = sum(s["step"].numel() * s["step"].element_size() for s in optimizer.state.values())
    assert state_bytes(model, [optimizer]) == 3 * params + buffers + steps


@pytest.mark.parametrize("limit, where", [(None, "memory"), (10**9, "memory"), (1, "disk")])
def test_memory_below_the_limit_disk_above_and_restore_is_exact(limit, where):
    model, optimizer = _adam_model()
    files = {}

    def save(step):
        files["p"] = {"model": {k: v.clone() for k, v in model.state_dict().items()},
                      "optimizer": optimizer.state_dict()}
        return "p"

    def load(path):
        model.load_state_dict(files[path]["model"])
        optimizer.load_state_dict(files[path]["optimizer"])

    point = RollbackPoint(limit)
    point.take(model, [optimizer], step=7, save=save)
    assert point.where == where and (where == "disk") == bool(files) and point.memory.taken == (where == "memory")
    kept = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for group in optimizer.param_groups:
        group["lr"] = 0.5  # a remedy's LR after the snapshot: kept on restore
    assert point.restore(model, [optimizer], load=load) == 7
    assert all(torch.equal(p, k) for p, k in zip(model.parameters(), kept))
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_no_file_means_no_rollback_point():
    model, optimizer = _adam_model()
    point = RollbackPoint(1)
    point.take(model, [optimizer], step=3, save=lambda step: None)
    assert not point.taken and point.restore(model, [optimizer], load=lambda path: None) is None


@pytest.mark.parametrize("value, error", [(0, ValueError), (True, TypeError), (2.0, TypeError)])
def test_the_limit_is_checked(value, error):
    with pytest.raises(error, match="max_bytes"):
        RollbackPoint(value)
