"""Warmup factors and the shared LR control, against the `pytorch-warmup` package."""

import math

import pytest
import torch

from lightning_convergence.remedies.lr_control import LRControl
from lightning_convergence.remedies.warmup import untuned_period, warmup_factor


@pytest.mark.parametrize(
    ("shape", "period", "expected"),
    [
        ("linear", 4, [0.25, 0.5, 0.75, 1.0, 1.0]),
        ("linear", 0, [1.0] * 5),
        ("exponential", 2, [1 - math.exp(-(t + 1) / 2) for t in range(5)]),
        ("cosine", 4, [0.5 * (1 - math.cos(math.pi * min(1, (t + 1) / 4))) for t in range(5)]),
    ],
)
def test_warmup_factor_table(shape, period, expected):
    assert [warmup_factor(shape, t, period) for t in range(5)] == pytest.approx(expected)


def test_unknown_shape_raises():
    with pytest.raises(ValueError, match="`shape`.*'step'"):
        warmup_factor("step", 0, 3)


def test_untuned_period_from_beta2():
    param = torch.nn.Parameter(torch.ones(1))
    assert untuned_period(torch.optim.Adam([param], betas=(0.9, 0.999)), "linear") == 1999
    assert untuned_period(torch.optim.AdamW([param], betas=(0.9, 0.99)), "exponential") == 99
    with pytest.raises(ValueError, match="Adam-family.*SGD"):
        untuned_period(torch.optim.SGD([param], lr=0.1), "linear")


def _run_ours(make_scheduler, shape, period, steps=40, untuned=False):
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param], lr=0.1) if untuned else torch.optim.SGD([param], lr=0.1)
    scheduler = make_scheduler(optimizer)
    if untuned:
        period = untuned_period(optimizer, shape)
    control, count = LRControl(optimizer), [0]
    control.set_owner("warmup", lambda group: warmup_factor(shape, count[0], period),
                      after_step=lambda: count.__setitem__(0, count[0] + 1))
    effective = []
    for _ in range(steps):
        param.grad = torch.ones(2)
        optimizer.step()
        effective.append(control.last_effective_lrs[0])
        if scheduler is not None:
            scheduler.step()
    control.detach()
    return effective


def _run_theirs(make_scheduler, warmup_cls, steps=40, **kwargs):
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param], lr=0.1) if "period" not in kwargs else torch.optim.SGD([param], lr=0.1)
    scheduler = make_scheduler(optimizer)
    warmup = warmup_cls(optimizer, **({"warmup_period": kwargs["period"]} if "period" in kwargs else {}))
    effective = []
    for _ in range(steps):
        param.grad = torch.ones(2)
        effective.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        with warmup.dampening():
            if scheduler is not None:
                scheduler.step()
    return effective


SCHEDULERS = {
    "none": lambda optimizer: None,
    "step": lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5),
    "cosine": lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=30),
    "lambda": lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 / (1 + t)),
}


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("kind", ["LinearWarmup", "ExponentialWarmup", "UntunedLinearWarmup"])
def test_same_lr_sequence_as_pytorch_warmup(scheduler, kind):
    import pytorch_warmup

    make = SCHEDULERS[scheduler]
    if kind == "UntunedLinearWarmup":
        ours = _run_ours(make, "linear", None, untuned=True, steps=30)
        theirs = _run_theirs(make, pytorch_warmup.UntunedLinearWarmup, steps=30)
    else:
        shape = "linear" if kind == "LinearWarmup" else "exponential"
        ours = _run_ours(make, shape, 10)
        theirs = _run_theirs(make, getattr(pytorch_warmup, kind), period=10)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_lr_control_restores_and_composes_owners():
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([{"params": [param]}, {"params": [torch.nn.Parameter(torch.ones(1))], "lr": 1.0}],
                                lr=0.1)
    control = LRControl(optimizer)
    control.set_owner("a", lambda group: 0.5)
    control.set_owner("b", lambda group: 0.1 if group == 1 else 1.0)
    for p in (param, optimizer.param_groups[1]["params"][0]):
        p.grad = torch.ones(1)
    optimizer.step()
    assert control.last_effective_lrs == pytest.approx([0.05, 0.05])
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 1.0]  # restored after the step
    assert set(optimizer.param_groups[0]) == {"params", "lr", "momentum", "dampening", "weight_decay", "nesterov",
                                              "maximize", "foreach", "differentiable", "fused"}
    control.remove_owner("a")
    control.remove_owner("b")
    assert not control.attached and not optimizer._optimizer_step_pre_hooks


def test_lr_control_acts_once_when_a_subclass_calls_super_step():
    class Sub(torch.optim.SGD):
        def step(self, closure=None):
            self.seen = self.param_groups[0]["lr"]
            return super().step(closure)

    torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)  # SGD.step is wrapped by torch now too
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = Sub([param], lr=1.0)
    control, steps = LRControl(optimizer), []
    control.set_owner("half", lambda group: 0.5, after_step=lambda: steps.append(1))
    param.grad = torch.ones(1)
    optimizer.step()
    assert optimizer.seen == 0.5 and param.item() == 0.5  # applied once, not 0.25
    assert optimizer.param_groups[0]["lr"] == 1.0 and steps == [1]  # restored; counted once
    control.detach()


def test_led_by_first_spreads_the_first_optimizers_multipliers():
    from lightning_convergence.remedies.lr_factors import LRFactors

    def optimizer(groups):
        return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)], lr=0.1)

    assert LRFactors.led_by_first([optimizer(2), optimizer(3)], [0.5, 0.25]) == {0: [0.5, 0.25], 1: [0.5] * 3}
