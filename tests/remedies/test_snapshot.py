"""The rollback snapshot: buffers allocated once, and a restore that never lets the optimizer step
the snapshot's own tensors."""

import torch

from lightning_convergence.remedies.snapshot import ExactSnapshot, Snapshot


def model_and_adam():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    return model, torch.optim.Adam(model.parameters(), lr=0.1)


def step(model, optimizer):
    optimizer.zero_grad()
    model(torch.randn(8, 3)).sum().backward()
    optimizer.step()


def test_buffers_are_allocated_once_and_reused():
    model, optimizer = model_and_adam()
    step(model, optimizer)
    snapshot = Snapshot()
    snapshot.take(model, [optimizer], step=1)
    pointers = ([v.data_ptr() for v in snapshot._model.values()],
                [v.data_ptr() for s in snapshot._optimizers[0]["state"].values() for v in s.values()])
    step(model, optimizer)
    snapshot.take(model, [optimizer], step=2)
    assert pointers == ([v.data_ptr() for v in snapshot._model.values()],
                        [v.data_ptr() for s in snapshot._optimizers[0]["state"].values() for v in s.values()])
    assert torch.equal(snapshot._model["0.weight"], model[0].weight)


def test_two_rollbacks_to_one_snapshot_restore_the_same_state():
    """torch's Optimizer.load_state_dict keeps CPU tensors as they are: without a copy, the
    optimizer would step the snapshot's moments and a second rollback would restore those."""
    model, optimizer = model_and_adam()
    step(model, optimizer)
    snapshot = Snapshot()
    snapshot.take(model, [optimizer], step=1)
    expected = {k: v.clone() for k, v in optimizer.state[model[0].weight].items()}
    for _ in range(2):
        snapshot.restore(model, [optimizer])
        restored = optimizer.state[model[0].weight]
        assert all(torch.equal(restored[k], expected[k]) for k in expected)
        step(model, optimizer)
        step(model, optimizer)


def test_exact_snapshot_saved_state_matches_what_was_taken():
    model, optimizer = model_and_adam()
    step(model, optimizer)
    snapshot = ExactSnapshot()
    snapshot.take(model, [optimizer], step=1)
    weights = model[0].weight.detach().clone()
    step(model, optimizer)
    saved_model, saved_optimizers, _ = snapshot.saved()
    assert torch.equal(saved_model["0.weight"], weights)
    assert snapshot.restore(model, [optimizer]) == 1 and torch.equal(model[0].weight, weights)
