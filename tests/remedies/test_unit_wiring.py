"""Wiring found on the autograd graph: certain for chains, refused for residuals and branches."""

import torch
from torch import nn

from lightning_convergence.remedies.unit_wiring import UnitWiring, WiringProbe


def wire(model, x, sites, dims=None):
    probe = WiringProbe()
    probe.attach(model)
    loss = model(x).sum()
    probe.detach()
    assert not probe.attached
    return probe.resolve(loss, sites, dims or {name: 1 for name in sites})


class FunctionalBlock(nn.Module):
    """A common block written by hand: fc1 -> act -> fc2, no Sequential."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6)

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h) + h  # the activation is read twice


class SharedActivation(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 5), nn.Linear(5, 7), nn.Linear(7, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.c(self.act(self.b(self.act(self.a(x)))))


class ViewFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Linear(3 * 16, 2)

    def forward(self, x):
        h = self.act(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_sequential_mlp():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    wiring = wire(model, torch.randn(3, 4), {"1": ("1", 0)})["1"]
    assert isinstance(wiring, UnitWiring)
    assert (wiring.producer_name, wiring.consumer_name, wiring.columns_per_unit) == ("0", "3", 1)


def test_cnn_with_batchnorm_pool_and_flatten():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    wiring = wire(model, torch.randn(2, 1, 8, 8), {"2": ("2", 0)})["2"]
    assert isinstance(wiring, UnitWiring)
    assert wiring.producer_name == "0" and [n for n, _ in wiring.norms] == ["1"]
    assert wiring.consumer_name == "5" and wiring.columns_per_unit == 16


def test_conv_to_conv():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    wiring = wire(model, torch.randn(2, 1, 8, 8), {"1": ("1", 0)})["1"]
    assert isinstance(wiring, UnitWiring) and wiring.consumer_name == "2"


def test_hand_written_block_and_inplace_relu_with_a_functional_view():
    wiring = wire(FunctionalBlock(), torch.randn(3, 4), {"act": ("act", 0)})["act"]
    assert isinstance(wiring, UnitWiring) and (wiring.producer_name, wiring.consumer_name) == ("fc1", "fc2")
    wiring = wire(ViewFlatten(), torch.randn(2, 1, 4, 4), {"act": ("act", 0)})["act"]
    assert isinstance(wiring, UnitWiring) and wiring.columns_per_unit == 16


def test_residual_connection_is_refused_with_a_reason():
    reason = wire(Residual(), torch.randn(3, 6), {"act": ("act", 0)})["act"]
    assert isinstance(reason, str) and "more than one" in reason


def test_activation_called_twice_gives_one_wiring_per_call():
    result = wire(SharedActivation(), torch.randn(3, 4), {"act": ("act", 0), "act#2": ("act", 1)})
    assert (result["act"].producer_name, result["act"].consumer_name) == ("a", "b")
    assert (result["act#2"].producer_name, result["act#2"].consumer_name) == ("b", "c")


def test_last_activation_without_a_reader_layer_and_unknown_modules_are_refused():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    assert "no layer reads it" in wire(model, torch.randn(2, 4), {"1": ("1", 0)})["1"]
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.ReLU(), nn.Linear(3, 2))
    assert "LayerNorm" in wire(model, torch.randn(2, 4), {"2": ("2", 0)})["2"]


def test_sequence_outputs_use_the_last_dimension():
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 2))
    result = wire(model, torch.randn(2, 5, 4), {"1": ("1", 0)}, {"1": 2})
    assert isinstance(result["1"], UnitWiring)
    result = wire(model, torch.randn(2, 5, 4), {"1": ("1", 0)}, {"1": 1})  # units along the wrong dim
    assert isinstance(result["1"], str)


def test_site_that_did_not_run():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert "did not run" in wire(model, torch.randn(2, 4), {"1#2": ("1", 1)})["1#2"]
