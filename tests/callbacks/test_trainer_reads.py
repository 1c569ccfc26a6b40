"""``batch_loss``: the batch's training loss as a new float32 0-d tensor, from what Lightning hands
the callbacks. The Trainer is a stand-in with the two attributes read (a real fit passes through
these lines in every callback test; this table pins the edge cases)."""

from types import SimpleNamespace

import pytest
import torch

from lightning_convergence.callbacks._trainer_reads import batch_loss


@pytest.mark.parametrize(
    ("outputs", "accumulate", "logged", "expected"),
    [
        (torch.tensor(1.5), 1, {}, 1.5),
        ({"loss": torch.tensor(1.5)}, 1, {}, 1.5),
        ({"loss": torch.tensor([0.5], dtype=torch.bfloat16)}, 4, {}, 2.0),  # Lightning divided it by 4
        (torch.tensor(0.25, dtype=torch.float64), 2, {}, 0.5),
        (None, 1, {"train_loss": torch.tensor(3.0)}, 3.0),  # manual optimisation: the logged loss
        (None, 1, {}, None),
        ({"loss": torch.ones(3)}, 1, {}, None),  # not a scalar
    ],
)
def test_batch_loss_table(outputs, accumulate, logged, expected):
    trainer = SimpleNamespace(accumulate_grad_batches=accumulate, callback_metrics=logged)
    loss = batch_loss(trainer, outputs)
    if expected is None:
        assert loss is None
        return
    assert loss.shape == () and loss.dtype == torch.float32 and not loss.requires_grad
    assert loss.item() == expected


def test_batch_loss_is_never_a_view_of_the_users_tensor():
    """Callers keep the value across steps: a loss tensor the user changes in place later must
    not change it."""
    user = torch.tensor(1.0, requires_grad=True) * 1
    kept = batch_loss(SimpleNamespace(accumulate_grad_batches=1, callback_metrics={}), user)
    with torch.no_grad():
        user.add_(5.0)
    assert kept.item() == 1.0
