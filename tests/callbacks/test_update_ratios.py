"""The update-ratio sample: the host path (each weight's sample gathered right after its exact
sum of squares) gives the same numbers as the general path, bit for bit."""

import torch

import lightning_convergence.stats.host
from lightning_convergence.callbacks._update_ratios import SAMPLES, UpdateSample


def _measure(monkeypatch, host_path: bool, weights, update):
    monkeypatch.setattr(lightning_convergence.stats.host, "HOST_PATH_ON_CPU", host_path)
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    sample = UpdateSample()
    sample.take(params, step=4)
    with torch.no_grad():
        for p, u in zip(params, update):
            p.add_(u)
    return sample.measure(params, torch.tensor([0, 0, 1, 2]), 3, "auto", None)


def test_the_host_path_measures_the_same_ratios_as_the_general_path(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    shapes = [(300, 40), (40,), (2 * SAMPLES,), (3, 5, 7)]  # sampled, whole, sampled, whole
    weights = [torch.randn(s, generator=generator) for s in shapes]
    update = [torch.randn(s, generator=generator) * 1e-3 for s in shapes]
    host = _measure(monkeypatch, True, weights, update)
    general = _measure(monkeypatch, False, weights, update)
    assert host == general
    exact, sampled, change = host
    after = [w + u for w, u in zip(weights, update)]
    assert exact[0] == sum(float(torch.dot(w.reshape(-1), w.reshape(-1))) for w in after[:2])
    assert all(0 < c < s for c, s in zip(change, sampled))
