"""WarmupScheduler from ``Trainer(callbacks=...)`` down: with every kind of user scheduler the
effective LR is the scheduler's LR times the warmup factor, and the scheduler's own LR is
unchanged."""

import io
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_convergence import WarmupScheduler, default_callbacks
from lightning_convergence.remedies.warmup import warmup_factor
from lightning_convergence.recorder import REPORT_FILENAME
from tests.helpers.models import DigitsMLP, trainer_kwargs


class Recording(torch.optim.SGD):
    """Records the LR each step really uses (inside step: after every pre-hook)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.used: list[float] = []

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.used.append(self.param_groups[0]["lr"])
        super().step()
        return loss


def _scheduler(name, optimizer):
    lr_scheduler = torch.optim.lr_scheduler
    if name == "none":
        return None
    if name == "lambda":
        return {"scheduler": lr_scheduler.LambdaLR(optimizer, lambda t: 1 / (1 + 0.1 * t)), "interval": "step"}
    if name == "step":
        return {"scheduler": lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5), "interval": "step"}
    if name == "cosine":
        return {"scheduler": lr_scheduler.CosineAnnealingLR(optimizer, T_max=40), "interval": "step"}
    if name == "onecycle":
        return {"scheduler": lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, total_steps=48), "interval": "step"}
    if name == "plateau":
        return {"scheduler": lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0),
                "monitor": "val_loss", "interval": "epoch"}
    raise ValueError(name)


class Scheduled(DigitsMLP):
    def __init__(self, scheduler):
        super().__init__(shuffle=False)
        self.scheduler_name = scheduler
        self.scheduler_lrs: list[float] = []  # the scheduler's LR, outside any step

    def on_train_batch_start(self, batch, batch_idx):
        self.scheduler_lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        optimizer = Recording(self.parameters(), lr=0.05, momentum=0.9)
        scheduler = _scheduler(self.scheduler_name, optimizer)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


def _fit(tmp_path, model, callbacks, **kwargs):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **{"logger": False, "max_epochs": 3, **kwargs}))
    trainer.fit(model)
    return trainer


@pytest.mark.parametrize("scheduler", ["none", "lambda", "step", "cosine", "onecycle", "plateau"])
@pytest.mark.parametrize("shape", ["linear", "exponential", "cosine"])
def test_effective_lr_is_scheduler_lr_times_warmup(tmp_path, scheduler, shape):
    bare = Scheduled(scheduler)
    _fit(tmp_path / "bare", bare, [])
    warm = Scheduled(scheduler)
    _fit(tmp_path / "warm", warm, [WarmupScheduler(warmup_steps=20, shape=shape)])
    optimizer = warm.trainer.optimizers[0]
    used, scheduled = optimizer.used, warm.scheduler_lrs
    assert len(used) == len(scheduled) == 48
    expected = [lr * warmup_factor(shape, t, 20) for t, lr in enumerate(scheduled)]
    assert used == pytest.approx(expected, rel=1e-12)
    if scheduler == "plateau":
        # ReduceLROnPlateau multiplies the current LR: it must only ever see its own values.
        assert {round(lr / 0.05, 12) for lr in scheduled} <= {0.5**k for k in range(4)}
    else:
        assert scheduled == bare.scheduler_lrs  # the scheduler's own trajectory is untouched


def test_counts_optimizer_steps_under_accumulation(tmp_path):
    model = Scheduled("none")
    warmup = WarmupScheduler(warmup_steps=4)
    _fit(tmp_path, model, [warmup], accumulate_grad_batches=3, max_epochs=1)
    assert model.trainer.optimizers[0].used == pytest.approx([0.05 * f for f in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)])
    assert warmup._steps == {0: 6}


def test_fraction_and_untuned(tmp_path):
    model = Scheduled("none")
    _fit(tmp_path, model, [WarmupScheduler(warmup_steps=0.25)])  # a quarter of 48 steps
    assert model.trainer.optimizers[0].used[11] == pytest.approx(0.05) and model.trainer.optimizers[0].used[10] < 0.05

    class AdamModel(DigitsMLP):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3, betas=(0.9, 0.95))

    warmup = WarmupScheduler(warmup_steps="untuned")
    _fit(tmp_path / "adam", AdamModel(), [warmup])
    assert warmup._periods[0] == [39]  # int(2 / (1 - 0.95)) = int(39.99...), as pytorch-warmup computes it
    with pytest.raises(ValueError, match="Adam-family.*Recording"):
        _fit(tmp_path / "sgd", Scheduled("none"), [WarmupScheduler(warmup_steps="untuned")])


def test_zero_warmup_changes_nothing(tmp_path):
    L.seed_everything(0, verbose=False)
    bare = Scheduled("step")
    _fit(tmp_path / "bare", bare, [])
    L.seed_everything(0, verbose=False)
    warm = Scheduled("step")
    _fit(tmp_path / "warm", warm, [WarmupScheduler(warmup_steps=0)])
    assert warm.trainer.optimizers[0].used == bare.trainer.optimizers[0].used
    for a, b in zip(bare.parameters(), warm.parameters()):
        assert torch.equal(a, b)


def test_per_group_periods(tmp_path):
    class TwoGroups(DigitsMLP):
        def configure_optimizers(self):
            return Recording([{"params": self.net[0].parameters()}, {"params": self.net[2:].parameters()}], lr=0.1)

    model = TwoGroups()
    _fit(tmp_path, model, [WarmupScheduler(warmup_steps=[2, 8])], max_epochs=1)
    control_factors = [warmup_factor("linear", 1, 2), warmup_factor("linear", 1, 8)]
    assert control_factors == [1.0, 0.25]
    with pytest.raises(ValueError, match="2 periods but the optimizer has 1"):
        _fit(tmp_path / "bad", Scheduled("none"), [WarmupScheduler(warmup_steps=[2, 8])])


def test_resume_mid_warmup_continues_without_applying_twice(tmp_path):
    def run(root, epochs, ckpt=None):
        L.seed_everything(0, verbose=False)
        model = Scheduled("cosine")
        warmup = WarmupScheduler(warmup_steps=30)
        trainer = L.Trainer(callbacks=[warmup, ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
                            **trainer_kwargs(root, logger=False, max_epochs=epochs, enable_checkpointing=True))
        trainer.fit(model, ckpt_path=ckpt)
        return model, warmup

    full, full_warmup = run(tmp_path / "full", 3)
    run(tmp_path / "part", 1)  # stops at step 16, mid-warmup
    ckpt = torch.load(tmp_path / "part" / "ckpt" / "last.ckpt", weights_only=True)
    saved_lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    resumed, resumed_warmup = run(tmp_path / "part", 3, str(tmp_path / "part" / "ckpt" / "last.ckpt"))
    assert resumed.trainer.optimizers[0].used == pytest.approx(full.trainer.optimizers[0].used[16:], rel=1e-12)
    assert resumed.scheduler_lrs == full.scheduler_lrs[16:]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert resumed_warmup._steps == full_warmup._steps == {0: 48}
    # The checkpoint (taken at step 16, mid-warmup) holds the scheduler's LR, not the warmed one.
    assert saved_lr == pytest.approx(full.scheduler_lrs[16], rel=1e-12)
    assert saved_lr != pytest.approx(full.trainer.optimizers[0].used[16], rel=1e-3)


def test_interventions_logging_and_no_hooks_left(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    model = Scheduled("none")
    _fit(tmp_path, model, [WarmupScheduler(warmup_steps=10, log_every_n_steps=4)], logger=logger, max_epochs=1)
    report = json.load(open(logger.log_dir + "/" + REPORT_FILENAME))
    events = [(i["action"], i["detail"]["event"]) for i in report["interventions"]]
    assert events == [("warmup", "start"), ("warmup", "end")]
    logger.save()
    text = open(logger.log_dir + "/metrics.csv").read()
    assert "convergence/lr_factor" in text and "convergence/lr/group0" in text
    optimizer = model.trainer.optimizers[0]
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    assert optimizer.param_groups[0]["lr"] == 0.05


def test_rewarmup_api(tmp_path):
    class Rewarm(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 20:
                warmup.rewarmup(trainer, steps=4, source="test")

    warmup = WarmupScheduler(warmup_steps=5)
    model = Scheduled("none")
    _fit(tmp_path, model, [warmup, Rewarm()], max_epochs=2)
    used = model.trainer.optimizers[0].used
    assert used[19] == pytest.approx(0.05) and used[20:25] == pytest.approx([0.05 * f for f in (0.25, 0.5, 0.75, 1, 1)])


def test_state_dict_weights_only():
    warmup = WarmupScheduler(warmup_steps=10)
    warmup._steps = {0: 3}
    buffer = io.BytesIO()
    torch.save(warmup.state_dict(), buffer)
    buffer.seek(0)
    fresh = WarmupScheduler(warmup_steps=10)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh._steps == {0: 3}


def test_suite_adds_warmup_only_when_asked():
    names = [type(c).__name__ for c in default_callbacks(auto_remediate=True, warmup_steps=500)]
    assert names[:2] == ["PreflightCheck", "GradientNormMonitor"] and names[-2:] == ["WarmupScheduler", "AutoClip"]
    assert "WarmupScheduler" not in [type(c).__name__ for c in default_callbacks(auto_remediate=True)]
    with pytest.raises(ValueError, match="Warmup changes training"):
        default_callbacks(warmup_steps=500)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"warmup_steps": -1}, ValueError, "`warmup_steps`.*-1"),
        ({"warmup_steps": 1.5}, ValueError, "`warmup_steps`.*1.5"),
        ({"warmup_steps": float("nan")}, ValueError, "`warmup_steps`.*nan"),
        ({"warmup_steps": True}, TypeError, "`warmup_steps`.*True"),
        ({"warmup_steps": "tuned"}, ValueError, "`warmup_steps`.*'tuned'"),
        ({"warmup_steps": [3, -1]}, ValueError, "`warmup_steps`.*-1"),
        ({"warmup_steps": None}, TypeError, "`warmup_steps`.*None"),
        ({"shape": "step"}, ValueError, "`shape`.*'step'"),
        ({"log_every_n_steps": 0}, ValueError, "`log_every_n_steps`.*0"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        WarmupScheduler(**kwargs)


def test_each_optimizer_warms_up_on_its_own_steps(tmp_path):
    from tests.callbacks.test_gradient_norm_monitor_modes import TwoOptimizers

    warmup = WarmupScheduler(warmup_steps=4)
    model = TwoOptimizers()
    _fit(tmp_path, model, [warmup], max_epochs=1)
    assert warmup._steps == {0: 8, 1: 8}  # 8 batches, each optimizer steps once per batch
    assert all(not o._optimizer_step_pre_hooks for o in model.trainer.optimizers)


def test_fp16_step_skipped_by_the_scaler_does_not_count(tmp_path):
    from lightning.pytorch.plugins import MixedPrecision

    class Overflow(Scheduled):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * 1e30 if self.global_step == 3 else loss

    warmup = WarmupScheduler(warmup_steps=10)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    _fit(tmp_path, Overflow("none"), [warmup], plugins=[plugin], max_epochs=1)
    assert warmup._steps == {0: 15}  # 16 batches, one skipped by the scaler: 15 real updates


def test_exception_mid_warmup_leaves_no_hooks_and_the_users_lr(tmp_path):
    import copy
    import pickle

    class Boom(Scheduled):
        def training_step(self, batch, batch_idx):
            if self.global_step == 5:
                raise RuntimeError("user bug at step 5")
            return super().training_step(batch, batch_idx)

    warmup = WarmupScheduler(warmup_steps=20)
    pickle.loads(pickle.dumps(warmup))
    copy.deepcopy(warmup)
    model = Boom("none")
    with pytest.raises(RuntimeError, match="user bug at step 5"):
        _fit(tmp_path, model, [warmup])
    optimizer = model.trainer.optimizers[0]
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    assert optimizer.param_groups[0]["lr"] == 0.05
    report = json.load(open(tmp_path / REPORT_FILENAME))
    assert [i["detail"]["event"] for i in report["interventions"]] == ["start"]
    assert warmup._trainer_ref is None  # no reference of ours to the failed Trainer is kept
