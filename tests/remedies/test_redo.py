"""ReDo keeps the function, resets the right optimizer state, and draws reproducible weights."""

import pytest
import torch
from torch import nn

from lightning_convergence.remedies.redo import default_init_rows, reinit_units_
from lightning_convergence.remedies.unit_wiring import WiringProbe


def wiring_of(model, x, site):
    probe = WiringProbe()
    probe.attach(model)
    loss = model(x).sum()
    probe.detach()
    return probe.resolve(loss, {site: (site, 0)}, {site: 1})[site]


def adam_with_state(model, x):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(x).square().mean().backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("build,x,site", [
    (lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)), torch.randn(16, 5), "1"),
    (lambda: nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(6 * 9, 3)), torch.randn(4, 2, 6, 6), "2"),
])
def test_function_is_unchanged_and_units_get_new_weights(build, x, site):
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        model[0].bias[[1, 4]] = -100.0  # units 1 and 4 dead
    wiring = wiring_of(model, x, site)
    optimizer = adam_with_state(model, x)
    model.eval()  # fixed BatchNorm statistics: the same function before and after
    before = model(x)
    old_rows = model[0].weight[[1, 4]].clone()
    assert reinit_units_(wiring, [1, 4], [optimizer], torch.Generator().manual_seed(0)) == 2
    torch.testing.assert_close(model(x), before)
    assert not torch.equal(model[0].weight[[1, 4]], old_rows)
    assert bool((model[0].bias[[1, 4]].abs() < 1).all())
    state = optimizer.state[model[0].weight]
    assert state["exp_avg"][[1, 4]].abs().sum() == 0 and state["exp_avg_sq"][[1, 4]].abs().sum() == 0
    assert state["exp_avg"][[0, 2, 3]].abs().sum() > 0  # other rows keep their moments
    consumer = model[-1]
    assert optimizer.state[consumer.weight]["exp_avg"].abs().sum() > 0


def test_consumer_columns_and_their_moments_are_zeroed_for_a_flattened_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2))
    x = torch.randn(4, 1, 4, 4)
    wiring = wiring_of(model, x, "1")
    optimizer = adam_with_state(model, x)
    reinit_units_(wiring, [1], [optimizer], torch.Generator().manual_seed(0))
    assert model[3].weight[:, 16:32].abs().sum() == 0
    assert model[3].weight[:, :16].abs().sum() > 0 and model[3].weight[:, 32:].abs().sum() > 0
    assert optimizer.state[model[3].weight]["exp_avg"][:, 16:32].abs().sum() == 0


def test_sgd_momentum_is_reset_too():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(8, 3)
    wiring = wiring_of(model, x, "1")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(x).sum().backward()
    optimizer.step()
    reinit_units_(wiring, [0], [optimizer], torch.Generator().manual_seed(0))
    assert optimizer.state[model[0].weight]["momentum_buffer"][0].abs().sum() == 0


def test_new_weights_follow_the_default_initialisation_and_the_generator():
    weight = torch.zeros(64, 50)
    a, b = default_init_rows(weight, torch.arange(64), torch.Generator().manual_seed(3))
    c, d = default_init_rows(weight, torch.arange(64), torch.Generator().manual_seed(3))
    assert torch.equal(a, c) and torch.equal(b, d)
    bound = 1 / 50 ** 0.5
    assert a.abs().max() <= bound and a.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.1)
    state = torch.get_rng_state()
    default_init_rows(weight, torch.arange(2), torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_no_units_is_a_no_op():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    wiring = wiring_of(model, torch.randn(2, 3), "1")
    before = [p.clone() for p in model.parameters()]
    assert reinit_units_(wiring, [], [], torch.Generator()) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
