"""AutoClip from ``Trainer(callbacks=...)`` down, on a real digits MLP."""

import copy
import io
import json
import os
import pickle

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision

from lightning_convergence import AutoClip, GradientNormMonitor, default_callbacks
from lightning_convergence.recorder import REPORT_FILENAME
from tests.helpers.models import DigitsMLP, trainer_kwargs


class Spiky(DigitsMLP):
    """Inputs scaled by 100 on a few steps: gradient spikes."""

    spikes = (20, 21, 35)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_step in self.spikes:
            x = x * 100
        loss = torch.nn.functional.cross_entropy(self(x), y)
        return loss


def _fit(tmp_path, model, callbacks, **kwargs):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **{"logger": False, **kwargs}))
    trainer.fit(model)
    return trainer


def _norms_seen_by_optimizer(callbacks_before):  # noqa: D401
    """A probe placed after AutoClip: the global norm the optimizer will use."""
    seen = []

    class Probe(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            seen.append(torch.stack([g.norm() for g in grads]).norm().item())

    return callbacks_before + [Probe()], seen


class NormProbe(L.Callback):
    """Records the global gradient norm where it sits in the callback list."""

    def __init__(self):
        self.norms = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(torch.stack([g.norm() for g in grads]).norm().item())


@pytest.mark.parametrize("mode", ["percentile", "zscore"])
def test_spikes_are_clipped_and_recorded_per_window(tmp_path, mode):
    # ZClip's EMA needs its warm-up steps before it can clip: 10 here, so that step 20 counts.
    clip = AutoClip(mode=mode, log_every_n_steps=10, clip_warmup_steps=10 if mode == "zscore" else None)
    before, after = NormProbe(), NormProbe()
    _fit(tmp_path, Spiky(), [before, clip, after], max_epochs=3)
    ratio = [b / a for a, b in zip(before.norms, after.norms)]
    for step in Spiky.spikes:
        assert before.norms[step] > 20 * before.norms[min(Spiky.spikes) - 1]  # a real spike reached AutoClip
        assert ratio[step] < 0.05  # and left it cut down to the run's own scale
    calm = [r for i, r in enumerate(ratio) if i not in Spiky.spikes]
    if mode == "zscore":
        assert min(calm) > 0.5  # outside the spikes, at most a mild trim of slow drifts
    report = json.load(open(tmp_path / REPORT_FILENAME))
    clips = [i for i in report["interventions"] if i["action"] == "clip"]
    assert clips and all(set(c["detail"]) >= {"clipped_steps", "first_step", "last_step"} for c in clips)
    assert len(clips) <= 48 // 10 + 1  # aggregated: at most one record per logging window
    assert sum(c["detail"]["clipped_steps"] for c in clips) == sum(r < 1 - 1e-6 for r in ratio)


class GradientsAt(L.Callback):
    """Keeps the first and final layers' gradients and weights at one step."""

    def __init__(self, step):
        self.step, self.kept = step, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step:
            for name, layer in (("first", pl_module.net[0]), ("head", pl_module.net[4])):
                self.kept[name] = layer.weight.grad.clone()
                self.kept[f"{name}_w"] = layer.weight.detach().clone()


def test_agc_clips_units_and_spares_the_final_layer(tmp_path):
    probe, bare_probe = GradientsAt(20), GradientsAt(20)
    _fit(tmp_path, Spiky(), [AutoClip(mode="agc", clip_factor=0.01), probe], max_steps=21, max_epochs=3)
    _fit(tmp_path / "bare", Spiky(), [bare_probe], max_steps=21, max_epochs=3)
    seen, bare = probe.kept, bare_probe.kept
    assert seen["first"].norm() < bare["first"].norm()
    # Every unit of a clipped layer is within clip_factor of its weights; the head is not clipped.
    for name in ("first", "head"):
        ratio = seen[name].norm(dim=1) / seen[f"{name}_w"].norm(dim=1).clamp(min=1e-3)
        if name == "first":
            assert ratio.max() <= 0.01 * 1.0001
        else:
            assert ratio.max() > 0.01  # untouched: larger than AGC would have allowed


def test_logged_keys_and_dry_run_changes_nothing(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    callbacks, seen = _norms_seen_by_optimizer([AutoClip(auto_remediate=False, log_every_n_steps=5)])
    L.seed_everything(0, verbose=False)
    _fit(tmp_path, Spiky(), callbacks, logger=logger)
    logger.save()
    text = open(os.path.join(logger.log_dir, "metrics.csv")).read()
    for key in ("convergence/autoclip/norm", "convergence/autoclip/threshold", "convergence/autoclip/clipped_norm",
                "convergence/autoclip/clipped_fraction"):
        assert key in text
    bare_callbacks, bare_seen = _norms_seen_by_optimizer([])
    L.seed_everything(0, verbose=False)
    _fit(tmp_path / "bare", Spiky(), bare_callbacks)
    assert seen == bare_seen  # the dry run computed thresholds but clipped nothing


def test_ours_first_then_lightnings_gradient_clip_val(tmp_path):
    seen = []

    class Record(torch.optim.SGD):
        """Records the norm the update uses (after every callback and Lightning's clipping)."""

        def step(self, closure=None):
            loss = closure() if closure is not None else None  # backward and the hooks run here
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            seen.append(torch.stack([g.norm() for g in grads]).norm().item())
            super().step()
            return loss

    class Model(Spiky):
        def configure_optimizers(self):
            return Record(self.parameters(), lr=0.05, momentum=0.9)

    _fit(tmp_path, Model(), [AutoClip(mode="zscore", clip_warmup_steps=5)], gradient_clip_val=0.5, max_epochs=3)
    assert len(seen) == 48 and max(seen) <= 0.5 + 1e-4  # Lightning's fixed cap applies after ours


def test_accumulation_clips_once_per_optimizer_step(tmp_path):
    clip = AutoClip(mode="percentile", log_every_n_steps=2)
    trainer = _fit(tmp_path, DigitsMLP(), [clip], accumulate_grad_batches=3)
    assert clip._steps == trainer.global_step == 6
    assert clip._rule._cursor == 6


def test_fp16_overflow_step_leaves_the_history_alone(tmp_path):
    class Overflow(DigitsMLP):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * 1e30 if self.global_step == 5 else loss

    clip = AutoClip(mode="percentile", percentile=50.0)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    _fit(tmp_path, Overflow(), [clip], plugins=[plugin], max_steps=10)
    history = clip._rule.state_dict()["history"]
    assert torch.isnan(history[5]) and torch.isfinite(history[:5]).all() and torch.isfinite(history[6:10]).all()
    assert history[:10].nan_to_num(0).max() < 100  # unscaled norms, not times the loss scale


def test_resume_gives_the_same_thresholds(tmp_path):
    def run(root, epochs, ckpt_path=None):
        clip = AutoClip(mode="zscore", clip_warmup_steps=5, log_every_n_steps=3)
        L.seed_everything(0, verbose=False)
        model = Spiky(shuffle=False)
        trainer = L.Trainer(callbacks=[clip, ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
                            **trainer_kwargs(root, logger=False, max_epochs=epochs, enable_checkpointing=True))
        trainer.fit(model, ckpt_path=ckpt_path)
        return clip, model

    full_clip, full_model = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    resumed_clip, resumed_model = run(tmp_path / "part", 4, str(tmp_path / "part" / "ckpt" / "last.ckpt"))
    full_state, resumed_state = full_clip.state_dict(), resumed_clip.state_dict()
    assert full_state["rule"].keys() == resumed_state["rule"].keys() == {"mean", "var", "count", "initialised",
                                                                         "warmup_norms"}
    for name, value in full_state["rule"].items():
        assert torch.equal(value, resumed_state["rule"][name]), name
    assert full_state["steps"] == resumed_state["steps"] == 64
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert full_clip.state_dict()["records"] == resumed_clip.state_dict()["records"]


def test_state_dict_weights_only_and_pickle(tmp_path):
    clip = AutoClip(mode="percentile")
    _fit(tmp_path, DigitsMLP(), [clip])
    buffer = io.BytesIO()
    torch.save(clip.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = AutoClip(mode="percentile")
    fresh.load_state_dict(state)
    assert fresh._steps == 16
    pickle.loads(pickle.dumps(AutoClip()))
    copy.deepcopy(clip)


def test_suite_with_auto_remediate_includes_zscore_autoclip():
    _, monitor, *_, clip = default_callbacks(auto_remediate=True, log_every_n_steps=7, AutoClip={"z_thresh": 3.0})
    assert isinstance(monitor, GradientNormMonitor) and isinstance(clip, AutoClip)
    assert clip.mode == "zscore" and clip.z_thresh == 3.0 and clip.alpha == 0.9 and clip.log_every_n_steps == 7
    assert [type(c).__name__ for c in default_callbacks(auto_remediate=True, AutoClip=None)] == [
        "PreflightCheck", "GradientNormMonitor", "DeadNeuronTracker", "InputSanityChecker", "InitializationAudit", "PlateauAdvisor",
        "TrainingSpeedMonitor"]


def test_unreadable_sharding_is_refused_by_capability_not_by_name(tmp_path):
    """Parameters flattened by FSDP1 (torch marks them ``_fsdp_flattened``) cannot be read: refused
    when training starts, whatever the strategy's class is called; a strategy merely named like a
    sharded one trains."""
    model = DigitsMLP()
    model.net[0].weight._fsdp_flattened = True  # what FSDP1 sets on its flat views
    trainer = L.Trainer(callbacks=[AutoClip()], **trainer_kwargs(tmp_path, logger=False, max_steps=2))
    with pytest.raises(RuntimeError, match="flat FSDP1 view"):
        trainer.fit(model)
    trainer = L.Trainer(callbacks=[AutoClip()], **trainer_kwargs(tmp_path, logger=False, max_steps=2))
    trainer.strategy.__class__ = type("FSDPStrategy", (type(trainer.strategy),), {})
    trainer.fit(DigitsMLP())
    assert trainer.global_step == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "global"}, ValueError, "`mode`.*'global'"),
        ({"percentile": 0}, ValueError, "`percentile`.*0"),
        ({"percentile": 101}, ValueError, "`percentile`.*101"),
        ({"percentile": float("nan")}, ValueError, "`percentile`.*nan"),
        ({"window": 0}, ValueError, "`window`.*0"),
        ({"window": True}, TypeError, "`window`.*True"),
        ({"window": 2**25}, ValueError, "`window`"),
        ({"z_thresh": -1.0}, ValueError, "`z_thresh`.*-1.0"),
        ({"alpha": 1.0}, ValueError, "`alpha`.*1.0"),
        ({"alpha": float("inf")}, ValueError, "`alpha`.*inf"),
        ({"max_norm": 0.0}, ValueError, "`max_norm`.*0.0"),
        ({"min_ratio": 0.5}, ValueError, "`min_ratio`.*0.5"),
        ({"min_ratio": "10"}, TypeError, "`min_ratio`.*'10'"),
        ({"guard_remedy_steps": 0}, ValueError, "`guard_remedy_steps`.*0"),
        ({"clip_factor": "0.01"}, TypeError, "`clip_factor`.*'0.01'"),
        ({"eps": 0}, ValueError, "`eps`.*0"),
        ({"clip_warmup_steps": -1}, ValueError, "`clip_warmup_steps`.*-1"),
        ({"clip_warmup_steps": 2.0}, TypeError, "`clip_warmup_steps`.*2.0"),
        ({"include_current": 1}, TypeError, "`include_current`.*1"),
        ({"exclude_final_layer": None}, TypeError, "`exclude_final_layer`.*None"),
        ({"auto_remediate": "no"}, TypeError, "`auto_remediate`.*'no'"),
        ({"backend": "gpu"}, ValueError, "`backend`.*'gpu'"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        AutoClip(**kwargs)


def test_each_callback_keeps_its_records_after_fit(tmp_path):
    """Teardown order must not lose any callback's records (the run context is shared)."""
    class SpikyWithNaN(Spiky):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 40 else loss

    _, monitor, *_, clip = default_callbacks(auto_remediate=True, AutoClip={"clip_warmup_steps": 10})
    _fit(tmp_path, SpikyWithNaN(), [monitor, clip], max_epochs=3)
    assert [i["action"] for i in monitor.state_dict()["records"]["interventions"]] == ["skip_step"]
    assert {i["action"] for i in clip.state_dict()["records"]["interventions"]} == {"clip"}
    report = json.load(open(tmp_path / REPORT_FILENAME))
    assert {i["source"] for i in report["interventions"]} == {"GradientNormMonitor", "AutoClip"}


def test_suite_clipping_leaves_a_healthy_run_nearly_alone(tmp_path):
    _, monitor, *_, clip = default_callbacks(auto_remediate=True)
    _fit(tmp_path, DigitsMLP(n=1024), [monitor, clip], max_epochs=4)
    report = json.load(open(tmp_path / REPORT_FILENAME))
    clipped = sum(i["detail"]["clipped_steps"] for i in report["interventions"] if i["action"] == "clip")
    assert clipped <= 3  # of 128 steps
    assert report["summary"]["healthy"]


class MildSpikes(DigitsMLP):
    """The loss x5 on steps 30 and 70: gradient steps 5x the usual, outliers by z-score but not
    10x the mean."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * 5.0 if self.global_step in (30, 70) else loss


class PlantsARemedy(L.Callback):
    """Another remedy of the suite acts at step 20 (a record in the run's log, as PlateauAdvisor
    would leave)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from lightning_convergence.callbacks._context import run_context
        from lightning_convergence.recorder.records import Intervention

        if trainer.global_step == 20:
            run_context(trainer).log.add_intervention(Intervention("lr_scale", 20, "Planted", {"reason": "plateau"}))


@pytest.mark.parametrize("min_ratio, guard, clipped", [(1.0, None, [30, 70]), (10.0, None, []), (10.0, 30, [30])])
def test_min_ratio_leaves_mild_outliers_alone_except_right_after_another_remedy(tmp_path, min_ratio, guard, clipped):
    """Both 5x steps are z-score outliers (ZClip as published clips them); with ``min_ratio=10``
    they are left alone; with ``guard_remedy_steps=30`` the one within 30 steps of another
    remedy (step 30, after the planted one at 20) is clipped, the one at 70 is not."""
    clip = AutoClip(mode="zscore", z_thresh=4.0, alpha=0.9, min_ratio=min_ratio, guard_remedy_steps=guard,
                    clip_warmup_steps=10, log_every_n_steps=5)
    trainer = _fit(tmp_path, MildSpikes(lr=0.05), [PlantsARemedy(), clip], max_epochs=10, max_steps=90)
    records = [i for i in clip._records_state(trainer)["interventions"] if i["action"] == "clip"]
    first_steps = [r["detail"]["first_step"] for r in records]
    if min_ratio == 1.0:  # ZClip as published: both, and the odd ordinary step too
        assert {30, 70} <= set(first_steps)
    else:
        assert first_steps == clipped
