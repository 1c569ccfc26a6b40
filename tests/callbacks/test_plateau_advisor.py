"""PlateauAdvisor from Trainer.fit down: regimes, LR reductions like torch's, rollback, stop."""

import io
import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_convergence import PlateauAdvisor
from lightning_convergence.recorder.console import ConvergenceWarning
from tests.helpers.models import DigitsMLP, trainer_kwargs
from tests.helpers.no_action import assert_no_action, final_weights


class ConstantVal(DigitsMLP):
    """Logs a validation metric that never improves after the first check: a plateau."""

    def validation_step(self, batch, batch_idx):
        self.log("val_metric", 1.9 if self.current_epoch else 2.0)  # stuck after little progress


class Overfits(DigitsMLP):
    """Validation loss rising from epoch 2 while the training loss falls."""

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", 1.0 if self.current_epoch < 2 else 1.0 + 0.3 * (self.current_epoch - 1))


class BlowsUp(DigitsMLP):
    """The loss is multiplied by 1e3 from step 30 on, whatever the weights: no recovery possible."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * 1e3 if self.global_step >= 30 else loss


def fit(tmp_path, model, callbacks, **kwargs):
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=False, **kwargs), callbacks=callbacks)
    trainer.fit(model)
    return trainer


def interventions(callback, trainer, action=None):
    found = callback._records_state(trainer)["interventions"]
    return [i for i in found if action is None or i["action"] == action]


def test_plateau_reduces_the_lr_as_torch_would_and_leaves_param_groups_alone(tmp_path):
    advisor = PlateauAdvisor(monitor="val_metric", patience=1, factor=0.5, auto_remediate=True)
    # Adam at 1e-2 over 16 batches an epoch: the training loss has made progress by the second
    # check (the LR is only cut after progress).
    model = ConstantVal(lr=0.01, optimizer="adam")
    trainer = fit(tmp_path, model, [advisor], max_epochs=6, limit_train_batches=16)
    # torch's scheduler fed the same checks (2, 1, 1, 1, 1, 1) reduces after checks 3 and 5.
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=1, factor=0.5)
    expected = []
    for epoch, value in enumerate([2.0, 1.0, 1.0, 1.0, 1.0, 1.0]):
        before = optimizer.param_groups[0]["lr"]
        scheduler.step(value)
        if optimizer.param_groups[0]["lr"] != before:
            expected.append((epoch, optimizer.param_groups[0]["lr"]))
    scales = interventions(advisor, trainer, "lr_scale")
    assert [(s["step"] // 16 - 1, s["detail"]["lr_after"][0]) for s in scales] == expected
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.01  # the user's LR, untouched
    kinds = [d["kind"] for d in advisor._records_state(trainer)["diagnoses"]]
    assert "plateau" in kinds


def test_no_lr_cut_before_the_training_loss_made_progress(tmp_path):
    # A learning rate far too low: `val_metric` sits on a plateau from the first check, but
    # a run that never learned is not helped by a smaller LR. Said, not acted on.
    advisor = PlateauAdvisor(monitor="val_metric", patience=1, factor=0.5, auto_remediate=True)
    trainer = fit(tmp_path, ConstantVal(lr=1e-7), [advisor], max_epochs=6, limit_train_batches=16)
    assert interventions(advisor, trainer, "lr_scale") == []
    plateaus = [d for d in advisor._records_state(trainer)["diagnoses"] if d["kind"] == "plateau"]
    assert plateaus and plateaus[0]["severity"] == "warning"


def test_user_reduce_on_plateau_is_not_doubled(tmp_path):
    class WithROP(ConstantVal):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=1)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_metric"}}

    advisor = PlateauAdvisor(monitor="val_metric", patience=1, auto_remediate=True)
    with pytest.warns(ConvergenceWarning, match="not reduced twice"):
        trainer = fit(tmp_path, WithROP(), [advisor], max_epochs=5, limit_train_batches=4)
    assert interventions(advisor, trainer, "lr_scale") == []
    plateau = [d for d in advisor._records_state(trainer)["diagnoses"] if d["kind"] == "plateau"]
    assert plateau and plateau[0]["severity"] == "warning"


def test_divergence_rolls_back_lowers_the_lr_and_training_recovers(tmp_path):
    """The demo's fault (SGD lr 0.5 on the digits CNN, about 10x too high) with the whole suite:
    the advisor sees the divergence, rolls back and lowers the LR; without the suite the run ends
    at chance level."""
    from lightning_convergence import default_callbacks
    from lightning_convergence.demo.data import DigitsDataModule
    from lightning_convergence.demo.models import DigitsCNN

    results = {}
    for act in (False, True):
        L.seed_everything(0, verbose=False)
        callbacks = default_callbacks(auto_remediate=act, log_every_n_steps=10, num_classes=10)
        advisor = next(c for c in callbacks if isinstance(c, PlateauAdvisor))
        trainer = L.Trainer(max_epochs=5, accelerator="cpu", logger=False, callbacks=callbacks, log_every_n_steps=10,
                            default_root_dir=tmp_path / str(act),
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(DigitsCNN(lr=0.5), DigitsDataModule(seed=0))
        results[act] = (float(trainer.callback_metrics["val_acc"]), interventions(advisor, trainer),
                        advisor._records_state(trainer)["diagnoses"])
    assert results[False][1] == [] and results[False][2]  # diagnosed, nothing done
    actions = [i["action"] for i in results[True][1]]
    assert "rollback" in actions and "lr_scale" in actions
    assert "divergence" in [d["kind"] for d in results[True][2]]
    assert results[True][0] > 0.9 > 0.2 > results[False][0]


def test_failed_recoveries_stop_training_with_a_clear_message(tmp_path):
    advisor = PlateauAdvisor(auto_remediate=True, monitor=None, max_recoveries=2)
    with pytest.warns(ConvergenceWarning, match="stopped at step .* not recovering"):
        trainer = fit(tmp_path, BlowsUp(lr=0.05), [advisor], max_epochs=20, log_every_n_steps=5)
    actions = [i["action"] for i in interventions(advisor, trainer)]
    assert actions.count("rollback") == 2 and actions[-1] == "stop"
    assert trainer.global_step < 20 * 16
    stop = interventions(advisor, trainer, "stop")[0]
    assert stop["detail"] == {"reason": "divergence", "failed_recoveries": 2}


def test_overfitting_is_diagnosed_and_stops_when_asked(tmp_path):
    advisor = PlateauAdvisor(monitor="val_loss", auto_remediate=True, stop_on_overfit=True, patience=100)
    trainer = fit(tmp_path, Overfits(lr=0.05), [advisor], max_epochs=10, limit_train_batches=8)
    overfit = [d for d in advisor._records_state(trainer)["diagnoses"] if d["kind"] == "overfitting"]
    assert overfit and "training loss kept falling" in overfit[0]["message"]
    assert trainer.current_epoch < 9 and interventions(advisor, trainer, "stop")


def test_missing_metric_strict_raises_listing_metrics_and_lenient_warns_once(tmp_path):
    with pytest.raises(RuntimeError, match=r"val_nope.*'val_loss'"):
        fit(tmp_path, DigitsMLP(), [PlateauAdvisor(monitor="val_nope", strict=True)], max_epochs=1)
    with pytest.warns(ConvergenceWarning, match="val_nope") as record:
        fit(tmp_path, DigitsMLP(), [PlateauAdvisor(monitor="val_nope")], max_epochs=3, limit_train_batches=4)
    assert len([w for w in record if "val_nope" in str(w.message)]) == 1


def test_no_validation_loop_runs(tmp_path):
    trainer = fit(tmp_path, DigitsMLP(val=False), [PlateauAdvisor(auto_remediate=True)], max_epochs=2)
    assert trainer.current_epoch == 2


def test_fast_dev_run_takes_no_action_where_a_real_run_would(tmp_path):
    # NaN inputs from step 2 on: the loss goes NaN, a divergence; a real run cuts the LR and
    # rolls back (the control), fast_dev_run must not.
    def make_model():
        return DigitsMLP(nan_at_step=2, nan_steps=100)

    def make_callbacks():  # a window of 5: a divergence needs 5 NaN losses
        return [PlateauAdvisor(auto_remediate=True, log_every_n_steps=5)]

    _, acted = final_weights(make_model, make_callbacks(), max_steps=10, logger=False, default_root_dir=tmp_path)
    assert {i["action"] for i in acted} >= {"lr_scale", "rollback"}
    assert_no_action(make_model, make_callbacks, fast_dev_run=10, default_root_dir=tmp_path)


def test_watching_changes_nothing(tmp_path):
    results = []
    for callbacks in ([], [PlateauAdvisor(monitor="val_loss", num_classes=10)]):
        L.seed_everything(0)
        model = DigitsMLP(dropout=0.2, lr=1.5)  # diverges: the advisor sees it and must not act
        fit(tmp_path, model, callbacks, max_epochs=2, log_every_n_steps=4)
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(results[0], results[1])


def _train(root, epochs, advisor, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    model = ConstantVal(lr=0.05, shuffle=False)
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
    trainer = L.Trainer(callbacks=[advisor, checkpoint], **trainer_kwargs(
        root, logger=False, max_epochs=epochs, enable_checkpointing=True, log_every_n_steps=5))
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


def test_resume_right_after_a_reduction_is_bit_identical(tmp_path):
    make = lambda: PlateauAdvisor(monitor="val_metric", patience=0, factor=0.5, auto_remediate=True)  # noqa: E731
    full_advisor = make()
    _, full_model = _train(tmp_path / "full", 5, full_advisor)
    part = make()
    part_trainer, _ = _train(tmp_path / "part", 3, part)
    scales = interventions(part, part_trainer, "lr_scale")
    assert scales and scales[-1]["step"] == part_trainer.global_step  # the checkpoint follows a reduction
    resumed_advisor = make()
    _, resumed_model = _train(tmp_path / "part", 5, resumed_advisor, str(tmp_path / "part" / "ckpt" / "last.ckpt"))
    a = torch.cat([p.detach().reshape(-1) for p in full_model.parameters()])
    b = torch.cat([p.detach().reshape(-1) for p in resumed_model.parameters()])
    assert torch.equal(a, b)
    sa, sb = full_advisor.state_dict(), resumed_advisor.state_dict()
    assert sa["records"] == sb["records"] and sa["factors"] == sb["factors"] and sa["schedule"] == sb["schedule"]


def test_state_dict_survives_weights_only_load(tmp_path):
    advisor = PlateauAdvisor(monitor="val_metric", patience=0, auto_remediate=True)
    fit(tmp_path, ConstantVal(), [advisor], max_epochs=3, limit_train_batches=7, log_every_n_steps=5)
    buffer = io.BytesIO()
    torch.save(advisor.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = PlateauAdvisor(monitor="val_metric", patience=0, auto_remediate=True)
    fresh.load_state_dict(state)
    assert fresh._factors.factors == advisor._factors.factors and len(fresh._losses) == len(advisor._losses) > 0


@pytest.mark.parametrize("kwargs,error,named", [
    ({"monitor": ""}, ValueError, "monitor"), ({"monitor": 3}, TypeError, "monitor"), ({"mode": "up"}, ValueError, "mode"),
    ({"factor": 1.0}, ValueError, "factor"), ({"factor": float("nan")}, ValueError, "factor"),
    ({"patience": -1}, ValueError, "patience"), ({"patience": True}, TypeError, "patience"),
    ({"threshold": -0.1}, ValueError, "threshold"), ({"threshold_mode": "relative"}, ValueError, "threshold_mode"),
    ({"cooldown": 1.5}, TypeError, "cooldown"), ({"min_lr": float("inf")}, ValueError, "min_lr"),
    ({"num_classes": 1}, ValueError, "num_classes"), ({"divergence_factor": 0}, ValueError, "divergence_factor"),
    ({"max_recoveries": 0}, ValueError, "max_recoveries"), ({"rollback": "yes"}, TypeError, "rollback"),
    ({"snapshot_every_n_steps": 0}, ValueError, "snapshot_every_n_steps"),
    ({"rewarmup_steps": -5}, ValueError, "rewarmup_steps"), ({"thresholds": {}}, TypeError, "thresholds"),
    ({"range_test_steps": 4}, ValueError, "range_test_steps"), ({"range_test_steps": 2.5}, TypeError, "range_test_steps"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, error, named):
    with pytest.raises(error, match=named):
        PlateauAdvisor(**kwargs)


def test_rewarmup_after_a_rollback_ramps_the_factor_back(tmp_path):
    seen = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append((trainer.global_step, advisor.factor_of(0, 0)))

    advisor = PlateauAdvisor(auto_remediate=True, monitor=None, rewarmup_steps=8, max_recoveries=10)
    trainer = fit(tmp_path, BlowsUp(lr=0.05), [advisor, Watch()], max_epochs=3, log_every_n_steps=5)
    first, second = [i["step"] for i in interventions(advisor, trainer, "rollback")][:2]
    after = [f for step, f in seen if first < step <= second]  # (the loss here stays huge: it rolls back again)
    assert len(after) >= 4 and after == sorted(after) and after[0] < after[-1] <= 0.1 + 1e-12


def test_no_learning_is_advised_and_raising_the_lr_is_opt_in(tmp_path):
    for raise_lr in (False, True):
        advisor = PlateauAdvisor(auto_remediate=True, monitor=None, num_classes=10, raise_lr_on_no_learning=raise_lr)
        trainer = fit(tmp_path / str(raise_lr), DigitsMLP(lr=1e-7), [advisor], max_epochs=11, log_every_n_steps=16)
        kinds = [d["kind"] for d in advisor._records_state(trainer)["diagnoses"]]
        assert "no_learning" in kinds
        scales = interventions(advisor, trainer, "lr_scale")
        assert [s["detail"]["reason"] for s in scales] == (["no_learning"] if raise_lr else [])
        if raise_lr:
            assert scales[0]["detail"]["factor"] == [10.0]


class HurtByAHigherLR(DigitsMLP):
    """Learns nothing at its LR (1e-6); any LR from 1e-5 up adds 10 to its loss: a remedy that
    raises the LR is planted to hurt."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss + 10.0 if self.optimizers().param_groups[0]["lr"] >= 1e-5 else loss


def _lr_used(trainer):
    return [g["lr"] for g in trainer.optimizers[0].param_groups]


def test_a_learning_rate_too_low_is_raised_by_the_measured_amount_and_undone_when_it_hurts(tmp_path):
    from lightning_convergence import default_callbacks

    L.seed_everything(0, verbose=False)
    model = HurtByAHigherLR(lr=1e-6)
    callbacks = default_callbacks(auto_remediate=True, AutoClip=None, log_every_n_steps=10)
    trainer = fit(tmp_path, model, callbacks, max_epochs=14)
    advisor = next(c for c in callbacks if isinstance(c, PlateauAdvisor))
    records = advisor._records_state(trainer)
    raises = [i for i in records["interventions"] if i["action"] == "lr_scale"
              and i["detail"]["reason"] == "learning_rate_too_low"]
    undos = [i for i in records["interventions"] if i["action"] == "undo"]
    assert len(raises) == 1 and raises[0]["detail"]["lr_after"][0] == pytest.approx(1e-6 * 100)  # capped at 100x
    assert len(undos) == 1 and undos[0]["step"] > raises[0]["step"]
    assert undos[0]["detail"]["loss_after"] > 1.1 * undos[0]["detail"]["loss_before"]
    assert advisor.factor_of(0, 0) == pytest.approx(1.0)  # the factor reverted, and not tried again
    with open(os.path.join(tmp_path, "convergence_report.json")) as handle:
        summary = json.load(handle)["summary"]
    assert summary["healthy"] is False and "undo" in summary["remedied"]


def test_the_update_ratios_estimate_raises_the_lr_at_most_twice_per_fit(tmp_path):
    """Adam at 1e-9 on the digits MLP, without the range test: each raise is capped at 100x and
    the run still does not learn, but a third raise never comes (on the calibration sweep, runs
    raised once or twice were helped; the one raised five times was harmed)."""
    L.seed_everything(0, verbose=False)
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=10, range_test_steps=None)
    from lightning_convergence import GradientNormMonitor

    model = DigitsMLP(lr=1e-9, optimizer="adam")
    trainer = fit(tmp_path, model, [GradientNormMonitor(log_every_n_steps=10), advisor], max_epochs=30)
    raises = [i for i in interventions(advisor, trainer, "lr_scale") if i["detail"]["reason"] == "learning_rate_too_low"]
    assert len(raises) == 2 and advisor._counts.raises == 2
    first, second = (r["detail"]["factor"][0] for r in raises)
    assert raises[1]["detail"]["lr_after"][0] == pytest.approx(1e-9 * first * second)
    assert advisor.factor_of(0, 0) == pytest.approx(first * second)  # kept to the end: no undo


class HurtLaterByAHigherLR(DigitsMLP):
    """Learns nothing at its LR (1e-6); from 40 steps after its LR first reaches 1e-5, and for as
    long as it stays there, 0.4 is added to its loss (17%, no divergence): raises planted to look harmless at their
    verdicts and to hurt later."""

    raised_at = None

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.optimizers().param_groups[0]["lr"] < 1e-5:
            return loss
        self.raised_at = self.global_step if self.raised_at is None else self.raised_at
        return loss + 0.4 if self.global_step - self.raised_at >= 40 else loss


def test_a_raise_that_hurts_after_its_verdict_is_undone_and_not_tried_again(tmp_path):
    from lightning_convergence import GradientNormMonitor

    L.seed_everything(0, verbose=False)
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=10, range_test_steps=None)
    model = HurtLaterByAHigherLR(lr=1e-6, optimizer="adam")
    trainer = fit(tmp_path, model, [GradientNormMonitor(log_every_n_steps=10), advisor], max_epochs=14)
    records = advisor._records_state(trainer)["interventions"]
    raises = [i for i in records if i["action"] == "lr_scale" and i["detail"]["reason"] == "learning_rate_too_low"]
    undos = [i for i in records if i["action"] == "undo"]
    assert len(raises) == 2 and len(undos) == 1  # both judged harmless at their windows; the last undone later
    late = undos[0]
    assert late["detail"]["why"] and late["step"] >= model.raised_at + 40 > raises[-1]["step"] + 10
    assert late["detail"]["factor"] == pytest.approx(1 / raises[-1]["detail"]["factor"][0])
    assert late["detail"]["loss_after"] > 1.1 * late["detail"]["loss_best_after"]
    assert advisor.factor_of(0, 0) == pytest.approx(raises[0]["detail"]["factor"][0])  # the last one reverted
    assert not [i for i in raises if i["step"] > late["step"]]  # and no raise after it


class HurtOnValidationByAHigherLR(DigitsMLP):
    """Learns nothing at its LR (1e-6); from 40 steps after its LR first reaches 5e-4, and for as
    long as it stays there, its validation loss is 1.0 higher (and ``val_neg``, its negative, 1.0
    lower) while its training loss is not touched: a raise planted to look harmless on the
    training loss and to hurt the outcome."""

    raised_at = None
    raised = False  # the LR of the last training step (the suite's factors apply inside the optimizer step)

    def training_step(self, batch, batch_idx):
        self.raised = self.optimizers().param_groups[0]["lr"] >= 5e-4
        if self.raised and self.raised_at is None:
            self.raised_at = self.global_step
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        if self.raised and self.global_step - self.raised_at >= 40:
            loss = loss + 1.0
        self.log("val_loss", loss)
        self.log("val_neg", -loss)


@pytest.mark.parametrize("monitor, mode", [("val_loss", "min"), ("val_neg", "max")])
def test_a_raise_that_hurts_the_monitored_metric_is_undone_and_not_tried_again(tmp_path, monitor, mode):
    """The validation loss, the outcome, gets 10% worse than its best since the raise while the
    training loss does not (in ``max`` mode: a negative metric 10% of its size lower): the raise
    in force is taken back (its factor reverted: the rate back below the harm), with the metric's
    numbers, no raise follows, and the metric recovers."""
    from lightning_convergence import GradientNormMonitor

    L.seed_everything(0, verbose=False)
    advisor = PlateauAdvisor(monitor=monitor, mode=mode, auto_remediate=True, log_every_n_steps=10,
                             range_test_steps=None)
    model = HurtOnValidationByAHigherLR(lr=1e-6, optimizer="adam")
    trainer = fit(tmp_path, model, [GradientNormMonitor(log_every_n_steps=10), advisor], max_epochs=14)
    records = advisor._records_state(trainer)["interventions"]
    raises = [i for i in records if i["action"] == "lr_scale" and i["detail"]["reason"] == "learning_rate_too_low"]
    undos = [i for i in records if i["action"] == "undo"]
    assert len(raises) == 2 and len(undos) == 1, [(i["action"], i["step"]) for i in records]
    undo = undos[0]
    assert f"`{monitor}`" in undo["detail"]["why"] and undo["step"] >= model.raised_at + 40
    best, now = undo["detail"]["monitor_best_after"], undo["detail"]["monitor_now"]
    assert abs(now - best) > 0.1 * abs(best)
    assert undo["detail"]["factor"] == pytest.approx(1 / raises[-1]["detail"]["factor"][0])  # the raise in force
    assert advisor.factor_of(0, 0) == pytest.approx(raises[0]["detail"]["factor"][0])  # the first one stays
    assert not [i for i in raises if i["step"] > undo["step"]]  # and no raise after it
    assert not model.raised  # the rate is back below the harm
    final = float(trainer.callback_metrics["val_loss"])
    assert final < (best if mode == "min" else -best) + 0.5  # the planted 1.0 is gone


class NamesTheLRTooHigh(L.Callback):
    """At step ``at`` another callback's warning lands in the run's log, its top cause a learning
    rate too high, named by evidence (what GradientNormMonitor or DeadNeuronTracker would post)."""

    def __init__(self, at: int, kind: str, evidence: dict):
        self.at, self.kind, self.evidence = at, kind, evidence

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from lightning_convergence.callbacks._context import run_context
        from lightning_convergence.recorder.records import Diagnosis

        if trainer.global_step == self.at:
            run_context(trainer).log.add_diagnosis(Diagnosis(
                self.kind, "warning", step=self.at, epoch=0, source="Planted", observation="Planted.",
                causes=[{"cause": "learning_rate_too_high", "confidence": 0.6, "evidence": self.evidence}]))


@pytest.mark.parametrize("kind,evidence,cuts", [
    ("exploding_gradients", {"update_ratio_median": 0.5}, 1), ("dead_units", {"update_ratio_peak": 0.5}, 1),
    ("divergence", {"update_ratio_median": 0.5}, 0),  # answered by its own remedy
    ("dead_units", {"dead_bias_mean": -3.0}, 0),  # a bias names a bad initialization as well: no cut
])
def test_a_warning_whose_top_cause_is_a_learning_rate_too_high_cuts_it_whatever_its_kind(tmp_path, kind, evidence,
                                                                                          cuts):
    """The remedy follows the top cause: a warning of another callback naming the learning rate
    too high (by evidence) gets the LR cut at the advisor's next window. A divergence has its own
    remedy (rollback and cut), so it is not answered twice."""
    L.seed_everything(0, verbose=False)
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=10)
    trainer = fit(tmp_path, DigitsMLP(lr=0.05), [NamesTheLRTooHigh(12, kind, evidence), advisor], max_epochs=2)
    found = [i for i in interventions(advisor, trainer, "lr_scale") if i["detail"]["reason"] == "learning_rate_too_high"]
    assert len(found) == cuts
    if cuts:
        assert found[0]["step"] == 19 and found[0]["detail"]["factor"] == [pytest.approx(0.1)]
        assert found[0]["detail"]["named_by"] == kind


@pytest.mark.parametrize("lr,at,rolled_back", [(1e-7, 22, True), (0.05, 52, False)])
def test_a_cut_for_a_learning_rate_too_high_rolls_back_first_when_that_loses_nothing(tmp_path, lr, at, rolled_back):
    """At 1e-7 the loss never leaves its start: the cut returns to the weights of step 0 first
    (a run that collapsed at a high rate starts again at the lower one), and is judged against
    the loss before the rollback. At 0.05 the loss fell by step 59 and that window's snapshot
    is the state now: there is nothing better to return to, so only the LR is cut."""
    L.seed_everything(0, verbose=False)
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=10)
    planted = NamesTheLRTooHigh(at, "dead_units", {"update_ratio_peak": 0.5})
    trainer = fit(tmp_path, DigitsMLP(lr=lr), [planted, advisor], max_epochs=4)
    cut = [i for i in interventions(advisor, trainer, "lr_scale") if i["detail"]["reason"] == "learning_rate_too_high"]
    rollbacks = interventions(advisor, trainer, "rollback")
    assert len(cut) == 1 and cut[0]["step"] == at + 7 and cut[0]["detail"]["rolled_back"] is rolled_back
    if not rolled_back:
        assert rollbacks == []
        return
    assert [r["step"] for r in rollbacks] == [at + 7]
    detail = rollbacks[0]["detail"]
    assert detail["reason"] == "learning_rate_too_high" and detail["to_step"] == 0
    assert detail["loss_now"] >= 0.95 * detail["loss_at_snapshot"]
    assert cut[0]["detail"]["loss_before"] == pytest.approx(detail["loss_now"])  # judged from before both
