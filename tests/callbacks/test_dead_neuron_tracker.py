"""DeadNeuronTracker from Trainer.fit down: counts against a naive reference, messages, hooks."""

import json
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from lightning_convergence import DeadNeuronTracker
from lightning_convergence.recorder.console import ConvergenceWarning
from tests.helpers.loggers import MemoryLogger
from tests.helpers.models import DigitsMLP, digits_tensors, trainer_kwargs
from tests.helpers.no_action import assert_no_action, final_weights
from lightning_convergence.callbacks._context import run_context


class PlantedCNN(DigitsMLP):
    """Conv -> ReLU -> Flatten -> Linear -> ReLU -> Linear on 8x8 digits, with conv channel 2
    and hidden unit 5 planted dead (a bias of -1000: their ReLU never fires, gets no gradient)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(6 * 64, 16), nn.ReLU(), nn.Linear(16, 10))
        with torch.no_grad():
            self.net[1].bias[2] = -1000.0
            self.net[4].bias[5] = -1000.0


class Recorder(L.Callback):
    """The reference: every training output of the hooked activations, with its step."""

    def __init__(self, modules):
        self.modules, self.outputs, self.step, self.handles = modules, [], 0, []

    def on_train_start(self, trainer, pl_module):
        for name in self.modules:
            module = pl_module.get_submodule(name)
            self.handles.append(module.register_forward_hook(
                lambda m, a, out, name=name: self.outputs.append((self.step, name, out.detach().clone()))))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step

    def on_train_end(self, trainer, pl_module):
        for handle in self.handles:
            handle.remove()


def fit(tmp_path, model, callbacks, **kwargs):
    logger = MemoryLogger(str(tmp_path))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, **kwargs), callbacks=callbacks)
    trainer.fit(model)
    return trainer, logger


def test_dead_fractions_equal_a_naive_reference_on_the_same_batches(tmp_path):
    L.seed_everything(0)
    tracker = DeadNeuronTracker(sample_every_n_steps=2, min_batches=2)
    recorder = Recorder(["net.2", "net.5"])
    _, logger = fit(tmp_path, PlantedCNN(lr=0.05), [tracker, recorder], log_every_n_steps=4, max_epochs=1)
    dims = {"net.2": 1, "net.5": 1}
    windows = 0
    for step, logged in logger.series("convergence/dead_fraction/net.2"):
        for name in ("net.2", "net.5"):
            batches = [out for s, n, out in recorder.outputs if n == name and step - 3 <= s <= step and s % 2 == 0]
            moved = [b.movedim(dims[name], -1).reshape(-1, b.shape[dims[name]]) for b in batches]
            dead = (torch.cat(moved).amax(0) <= 0).double().mean().item()
            value = dict(logger.series(f"convergence/dead_fraction/{name}"))[step]
            assert value == pytest.approx(dead)
        windows += 1
    assert windows >= 3
    last = dict(logger.series("convergence/dead_fraction/net.2"))
    assert min(last.values()) >= 1 / 6  # the planted channel is dead in every window


def test_planted_dead_layer_is_diagnosed_with_numbers_and_layer(tmp_path):
    L.seed_everything(0)
    model = DigitsMLP(hidden=16)
    with torch.no_grad():
        model.net[0].bias[:8] = -1000.0
    tracker = DeadNeuronTracker(sample_every_n_steps=1)
    trainer, _ = fit(tmp_path, model, [tracker], log_every_n_steps=4)
    records = tracker._records_state(trainer)["diagnoses"]
    dead = [d for d in records if d["kind"] == "dead_units"]
    assert dead and dead[0]["layer"] == "net.1" and dead[0]["severity"] == "warning"
    assert dead[0]["evidence"]["dead_fraction"] == 0.5 and "8 of 16 units" in dead[0]["message"]
    assert "-1e+03" in dead[0]["message"]  # the planted biases are named as the likely cause


def test_saturated_tanh_layer_is_diagnosed(tmp_path):
    L.seed_everything(0)
    model = DigitsMLP(hidden=16, activation=nn.Tanh)
    with torch.no_grad():
        model.net[0].weight.mul_(200.0)
    tracker = DeadNeuronTracker(sample_every_n_steps=1)
    trainer, logger = fit(tmp_path, model, [tracker], log_every_n_steps=4)
    kinds = {d["kind"] for d in tracker._records_state(trainer)["diagnoses"]}
    assert "saturated_units" in kinds and "dead_units" not in kinds
    assert logger.series("convergence/saturation/net.1")[0][1] > 0.5


def _all_dead_mlp() -> DigitsMLP:
    """Both hidden layers dead from the start (biases at -5): the output is constant."""
    L.seed_everything(0)
    model = DigitsMLP(hidden=32, lr=0.05, n=1500)
    with torch.no_grad():
        model.net[0].bias.fill_(-5.0)
        model.net[2].bias.fill_(-5.0)
    return model


def test_redo_revives_dead_units_and_training_recovers(tmp_path):
    x, y = digits_tensors(1500)
    accuracies, records = {}, {}
    for act in (False, True):
        model = _all_dead_mlp()
        tracker = DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=act, redo_cooldown_steps=1000)
        trainer, _ = fit(tmp_path / str(act), model, [tracker], log_every_n_steps=4, max_epochs=4)
        accuracies[act] = (model(x).argmax(1) == y).float().mean().item()
        records[act] = tracker._records_state(trainer)
    assert accuracies[False] < 0.2 and accuracies[True] > 0.8
    assert records[False]["interventions"] == []
    revived = records[True]["interventions"]
    assert {(i["detail"]["layer"], i["detail"]["units"]) for i in revived} == {("net.1", 32), ("net.3", 32)}
    assert all(i["action"] == "reinit_units" for i in revived)
    # The cooldown (1000 steps) is longer than the run (188 steps): one revival per layer.
    assert sorted(i["detail"]["layer"] for i in revived) == ["net.1", "net.3"]
    # Layers entirely dead make the output constant: revived at the end of the first window
    # (4 steps), not a window later.
    assert {i["step"] for i in revived} == {3}


@pytest.mark.parametrize("max_steps, revived", [(11, False), (12, True)])
def test_no_revival_without_two_windows_left_in_the_fit(tmp_path, max_steps, revived):
    """The same dead layers, judged at the end of the first 4-step window: with 7 steps left the
    revival could be neither judged nor pay off, so the layers are reported, not revived; with
    8 (two windows) they are revived."""
    model = _all_dead_mlp()
    tracker = DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=True, redo_cooldown_steps=1000)
    trainer, _ = fit(tmp_path, model, [tracker], log_every_n_steps=4, max_steps=max_steps)
    records = tracker._records_state(trainer)
    assert any(d["kind"] == "dead_units" for d in records["diagnoses"])
    assert bool(records["interventions"]) is revived


class LargeUpdates(L.Callback):
    """Posts what GradientNormMonitor would after updates far too large: each step moved the
    weights by half their norm (planted; the model's own updates are ordinary)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from lightning_convergence.callbacks._context import run_context

        run_context(trainer).evidence.post(update_ratio_median=0.5, update_ratio_step=trainer.global_step)


def _zero_first_layer_mlp() -> DigitsMLP:
    """The first hidden layer's weights and biases at 0: dead from the start, with no negative
    bias to blame (SGD at 0.05, seed 0)."""
    L.seed_everything(0)
    model = DigitsMLP(hidden=32, lr=0.05, n=1500)
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].bias.zero_()
    return model


@pytest.mark.parametrize("with_advisor", [True, False])
def test_dead_units_put_down_to_a_learning_rate_too_high_are_revived_with_the_lr_cut(tmp_path, with_advisor):
    """A first layer dead from the start (weights and biases 0: no negative bias to blame) while
    the updates are far too large: the top cause is the learning rate, and at that rate revived
    units die again. With PlateauAdvisor acting, the tracker revives them together with its LR
    cut, right after it at the same step, as one remedy under the cut's verdict; alone, the
    tracker revives them at once (nothing else would act)."""
    from lightning_convergence import PlateauAdvisor

    model = _zero_first_layer_mlp()
    tracker = DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=True, redo_cooldown_steps=1000)
    advisor = [PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=4)] if with_advisor else []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = fit(tmp_path, model, [LargeUpdates(), tracker, *advisor], log_every_n_steps=4, max_epochs=3)
    records = tracker._records_state(trainer)
    dead = [d for d in records["diagnoses"] if d["kind"] == "dead_units" and d["severity"] != "info"]
    assert dead and dead[0]["causes"][0]["cause"] == "learning_rate_too_high"
    log = run_context(trainer).log.interventions
    revived = [i for i in log if i.action == "reinit_units"]
    assert revived and (revived[0].detail["layer"], revived[0].detail["units"]) == ("net.1", 32)
    said = [str(w.message) for w in caught if "not revived" in str(w.message)]
    assert bool(said) is with_advisor and (not said or "revived with PlateauAdvisor's cut" in said[0])
    if with_advisor:
        cut = [i for i in log if i.action == "lr_scale" and i.detail["reason"] == "learning_rate_too_high"]
        assert cut and cut[0].detail["named_by"] == "dead_units" and revived[0].step == cut[0].step
        assert log.index(revived[0]) == log.index(cut[0]) + 1  # right after the cut it goes with
        assert revived[0].detail["with"] == "lr_cut"
    else:
        assert "with" not in revived[0].detail


def test_the_revival_with_the_cut_does_not_depend_on_the_order_of_the_callbacks(tmp_path):
    """PlateauAdvisor listed before the tracker judges a step's window before the tracker's
    finding of that step exists, and cuts at its next window on it: the units are revived right
    after that cut all the same."""
    from lightning_convergence import PlateauAdvisor

    model = _zero_first_layer_mlp()
    tracker = DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=True, redo_cooldown_steps=1000,
                                log_every_n_steps=8)
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=4)
    trainer, _ = fit(tmp_path, model, [LargeUpdates(), advisor, tracker], log_every_n_steps=4, max_epochs=3)
    log = run_context(trainer).log.interventions
    actions = [(i.action, i.step, i.detail.get("reason")) for i in log]
    cut = next(i for i in log if i.action == "lr_scale" and i.detail["reason"] == "learning_rate_too_high")
    revived = next(i for i in log if i.action == "reinit_units")
    assert revived.detail["with"] == "lr_cut" and revived.step == cut.step, actions
    assert log.index(revived) == log.index(cut) + 1


@pytest.mark.parametrize("step, restored_to, revived", [
    (119, None, True),  # the cut at the end of the window that found them, no rollback
    (129, 109, True),  # a window later, rolled back into the evidence's window (from step 40)
    (119, 0, False),  # rolled back to before the evidence: the units may have been alive there
    (109, None, False),  # a cut before the window ended cannot answer it
])
def test_a_revival_offered_to_the_cut_is_taken_only_for_weights_the_evidence_covers(step, restored_to, revived):
    """The offer's decision alone (``_revive_with_cut`` with the revival itself recorded by a
    stub: the wiring and weights are exercised by the fits above)."""
    tracker = DeadNeuronTracker(auto_remediate=True)
    done = []
    tracker._revive = lambda trainer, layer, units, at, with_lr_cut=False: done.append((layer, at, with_lr_cut))
    wait = tracker._revive_with_cut({"net.1": ([0, 1], 40)}, 119, 40, None, step, restored_to)
    assert done == ([("net.1", step, True)] if revived else []) and wait == (40 if revived else 0)
    assert tracker._rule.last_revival == ({"net.1": 119} if revived else {})


class PlantedOverfitting(L.Callback):
    """Adds an overfitting warning to the run's log at step 1, as PlateauAdvisor would when the
    validation loss rose while the training loss fell (planted: the digits MLP does not overfit
    within 3 epochs)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from lightning_convergence.recorder.records import Diagnosis

        if trainer.global_step == 1:
            run_context(trainer).log.add_diagnosis(
                Diagnosis("overfitting", "warning", step=1, epoch=0, source="planted", observation="Planted."))


def test_dead_units_are_not_revived_with_the_lr_cut_in_a_run_that_overfits(tmp_path):
    """Revived units give capacity back, which is not what hurts a run that overfits: the same
    layer dead under a learning rate too high gets the cut alone."""
    from lightning_convergence import PlateauAdvisor

    model = _zero_first_layer_mlp()
    tracker = DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=True, redo_cooldown_steps=1000)
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=4)
    trainer, _ = fit(tmp_path, model, [LargeUpdates(), PlantedOverfitting(), tracker, advisor],
                     log_every_n_steps=4, max_epochs=3)
    log = run_context(trainer).log.interventions
    cut = [i for i in log if i.action == "lr_scale" and i.detail["reason"] == "learning_rate_too_high"]
    assert cut and cut[0].detail["named_by"] == "dead_units"
    assert not [i for i in log if i.action == "reinit_units" and i.step == cut[0].step]


class HurtByLiveUnits(DigitsMLP):
    """A first hidden layer dead from the start, and a loss 10 higher as soon as any of its
    units fires: a revival planted to hurt."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        alive = (self.net[0](x) > 0).any()
        loss = nn.functional.cross_entropy(self(x), y) + 10.0 * alive.float()
        self.log("train_loss", loss)
        return loss


def test_a_revival_that_hurts_is_undone_and_not_tried_again(tmp_path):
    """ReDo acts under a guard judged by PlateauAdvisor's next window of the loss: the planted
    harm puts the weights back as they were before the revival, records an ``undo``, and blocks
    ReDo for the rest of the fit."""
    from lightning_convergence import PlateauAdvisor

    L.seed_everything(0)
    model = HurtByLiveUnits(hidden=32, lr=0.05, n=512)
    with torch.no_grad():
        model.net[0].bias.fill_(-5.0)
    tracker = DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=True, redo_cooldown_steps=20)
    advisor = PlateauAdvisor(monitor=None, log_every_n_steps=10)  # the judge of the loss; it does not act
    trainer, _ = fit(tmp_path, model, [tracker, advisor], log_every_n_steps=10, max_epochs=6)
    interventions = tracker._records_state(trainer)["interventions"]
    actions = [(i["action"], i["step"]) for i in interventions]
    revivals = [i for i in interventions if i["action"] == "reinit_units"]
    undos = [i for i in interventions if i["action"] == "undo"]
    assert len(revivals) == 1 and len(undos) == 1, actions  # not tried again after the undo
    assert undos[0]["step"] - revivals[0]["step"] >= 10  # judged after a full window
    assert undos[0]["detail"]["reason"] == "dead_units"
    assert undos[0]["detail"]["loss_after"] > 1.1 * undos[0]["detail"]["loss_before"]
    assert bool((model.net[0].bias == -5.0).all())  # the state from before the revival is back, and kept


class HurtByLiveUnitsZeroInit(DigitsMLP):
    """A first hidden layer with weights and biases at 0 (dead, with no negative bias to blame,
    so the large updates name the learning rate), SGD at 0.05, and a loss ``penalty`` higher as
    soon as any of its units fires: a revival planted to hurt."""

    def __init__(self, penalty: float):
        super().__init__(hidden=32, lr=0.05, n=512)
        self.penalty = penalty
        with torch.no_grad():
            self.net[0].weight.zero_()
            self.net[0].bias.zero_()

    def training_step(self, batch, batch_idx):
        x, y = batch
        alive = (self.net[0](x) > 0).any()
        loss = nn.functional.cross_entropy(self(x), y) + self.penalty * alive.float()
        self.log("train_loss", loss)
        return loss


@pytest.mark.parametrize("penalty, judged_after", [(0.5, 8), (10.0, 4)])
def test_a_revival_with_the_lr_cut_is_judged_with_it_and_undone_with_it(tmp_path, penalty, judged_after):
    """Units dead under a learning rate named too high are revived right after PlateauAdvisor's
    cut, and the pair is judged as one: the planted harm is undone as a whole (the rate back as
    the user set it, the layer's weights back to 0, as before the pair). A loss worse by 0.5 is
    judged after a window of the tracker (8 steps, two of the advisor's), which revived units need
    to learn; a loss worse by 10, a divergence, at the advisor's next window."""
    from lightning_convergence import PlateauAdvisor

    L.seed_everything(0)
    model = HurtByLiveUnitsZeroInit(penalty)
    tracker = DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=True, redo_cooldown_steps=1000,
                                log_every_n_steps=8)
    advisor = PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=4)  # its windows: 4 steps
    trainer, _ = fit(tmp_path, model, [LargeUpdates(), tracker, advisor], log_every_n_steps=4, max_epochs=4)
    log = run_context(trainer).log.interventions
    actions = [(i.action, i.step, i.detail.get("reason")) for i in log]
    cut = next(i for i in log if i.action == "lr_scale" and i.detail["reason"] == "learning_rate_too_high")
    revived = next(i for i in log if i.action == "reinit_units")
    undo = next(i for i in log if i.action == "undo")
    assert revived.step == cut.step and revived.detail["with"] == "lr_cut", actions
    assert undo.detail["reason"] == "learning_rate_too_high" and undo.detail["intervention_step"] == cut.step
    assert undo.step - cut.step == judged_after, actions
    assert undo.detail["loss_after"] > 1.1 * undo.detail["loss_before"]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)
    assert sum(1 for i in log if i.action == "reinit_units") == 1, actions  # not tried again
    assert bool((model.net[0].weight == 0).all()) and bool((model.net[0].bias == 0).all())


class KeepsKilling(DigitsMLP):
    """Units that die again right after every revival: before each batch, 8 units of the first
    hidden layer and 4 of the second get a bias of -50 (their ReLU never fires)."""

    def __init__(self):
        super().__init__(hidden=16)

    def on_train_batch_start(self, batch, batch_idx):
        with torch.no_grad():
            self.net[0].bias[:8] = -50.0
            self.net[2].bias[:4] = -50.0


def test_redo_cooldown_spaces_the_revivals_of_each_layer(tmp_path):
    """Read back from the run's convergence_report.json: each layer is revived again and again
    (its units keep dying), and never twice within `redo_cooldown_steps` optimizer steps.
    Without a cooldown these layers are revived every 15 steps (windows end every 5 steps and dead
    units must persist over windows); 20 makes the cooldown the binding limit."""
    cooldown = 20
    L.seed_everything(0, verbose=False)
    tracker = DeadNeuronTracker(sample_every_n_steps=1, min_batches=2, auto_remediate=True,
                                redo_cooldown_steps=cooldown)
    trainer = L.Trainer(callbacks=[tracker], **trainer_kwargs(tmp_path, logger=False, max_epochs=4,
                                                                log_every_n_steps=5))
    trainer.fit(KeepsKilling())
    report = json.loads((tmp_path / "convergence_report.json").read_text())
    steps: dict[str, list[int]] = {}
    for intervention in report["interventions"]:
        if intervention["action"] == "reinit_units":
            steps.setdefault(intervention["detail"]["layer"], []).append(intervention["step"])
    assert set(steps) == {"net.1", "net.3"}
    for layer, revived_at in steps.items():
        assert len(revived_at) >= 3, (layer, revived_at)  # 64 steps: revived at 9, 29, 49
        gaps = [b - a for a, b in zip(revived_at, revived_at[1:])]
        assert min(gaps) >= cooldown, (layer, revived_at)


def test_watching_changes_nothing(tmp_path):
    results = []
    for callbacks in ([], [DeadNeuronTracker(sample_every_n_steps=1)]):
        L.seed_everything(0)
        model = DigitsMLP(dropout=0.2)
        fit(tmp_path, model, callbacks, log_every_n_steps=3)
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(results[0], results[1])


def test_no_hooks_after_fit_and_a_second_fit_registers_once(tmp_path):
    class CountHooks(L.Callback):
        counts = []

        def on_before_backward(self, trainer, pl_module, loss):  # after the forward, inside the batch
            self.counts.append(len(pl_module.net[1]._forward_hooks))

    model = DigitsMLP()
    tracker = DeadNeuronTracker(sample_every_n_steps=2)
    for _ in range(2):
        L.Trainer(**trainer_kwargs(tmp_path, logger=False, max_epochs=1, limit_train_batches=5),
                  callbacks=[tracker, CountHooks()]).fit(model)
        assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in model.modules())
    # One hook during a sampled forward (steps 0, 2, 4 of each fit), none on the others, so that an
    # unsampled forward takes torch's fast path for modules without hooks.
    assert CountHooks.counts == [1, 0, 1, 0, 1] * 2


def test_inplace_relu_counts_like_plain_relu(tmp_path):
    fractions = []
    for inplace in (False, True):
        L.seed_everything(0)
        model = DigitsMLP(hidden=16, activation=lambda: nn.ReLU(inplace=inplace))
        with torch.no_grad():
            model.net[0].bias[:4] = -1000.0
        _, logger = fit(tmp_path, model, [DeadNeuronTracker(sample_every_n_steps=1)], log_every_n_steps=4)
        fractions.append(logger.series("convergence/dead_fraction/net.1"))
    assert fractions[0] == fractions[1] and fractions[0][0][1] == 0.25


class SharedReLU(DigitsMLP):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.act = nn.Linear(64, 16), nn.Linear(16, 8), nn.Linear(8, 10), nn.ReLU()

    def forward(self, x):
        return self.c(self.act(self.b(self.act(self.a(x)))))


def test_an_activation_called_twice_is_tracked_per_call(tmp_path):
    _, logger = fit(tmp_path, SharedReLU(), [DeadNeuronTracker(sample_every_n_steps=1)], log_every_n_steps=4)
    keys = {k for _, m in logger.metrics for k in m if k.startswith("convergence/dead_fraction/")}
    assert keys == {"convergence/dead_fraction/act", "convergence/dead_fraction/act#2"}


class FunctionalReLU(DigitsMLP):
    def __init__(self):
        super().__init__()
        del self.net
        self.fc1, self.fc2 = nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.nn.functional.relu(self.fc1(x)))


def test_a_model_without_activation_modules_says_why_nothing_is_tracked(tmp_path):
    with pytest.warns(ConvergenceWarning, match="F.relu.*cannot be hooked.*include"):
        fit(tmp_path, FunctionalReLU(), [DeadNeuronTracker()], max_epochs=1, limit_train_batches=2)


def test_activation_modules_that_never_run_are_reported(tmp_path):
    model = FunctionalReLU()
    model.unused = nn.ReLU()
    with pytest.warns(ConvergenceWarning, match="none of the 1 activation modules ran"):
        fit(tmp_path, model, [DeadNeuronTracker(sample_every_n_steps=1)], log_every_n_steps=2,
            limit_train_batches=4)


def test_include_tracks_a_named_module_and_unknown_names_raise(tmp_path):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 16)

        def forward(self, x):
            return torch.relu(self.fc(x))

    class Model(DigitsMLP):
        def __init__(self):
            super().__init__()
            self.block, self.head = Block(), nn.Linear(16, 10)

        def forward(self, x):
            return self.head(self.block(x))

    _, logger = fit(tmp_path, Model(), [DeadNeuronTracker(sample_every_n_steps=1, include=["block"])],
                    log_every_n_steps=4)
    assert logger.series("convergence/dead_fraction/block")
    with pytest.raises(ValueError, match="nope"):
        fit(tmp_path, Model(), [DeadNeuronTracker(include=["nope"])], limit_train_batches=1)


def test_fast_dev_run_takes_no_action_where_a_real_run_would(tmp_path):
    # A layer dead from the start: a real run revives it with ReDo (the control), fast_dev_run
    # must not touch the weights.
    def make_model():
        model = DigitsMLP()
        with torch.no_grad():
            model.net[0].bias.fill_(-1000.0)
        return model

    def make_callbacks():
        return [DeadNeuronTracker(sample_every_n_steps=1, min_batches=1, auto_remediate=True, log_every_n_steps=1)]

    _, acted = final_weights(make_model, make_callbacks(), max_steps=3, logger=False, default_root_dir=tmp_path)
    assert [i["action"] for i in acted][:1] == ["reinit_units"]
    assert_no_action(make_model, make_callbacks, fast_dev_run=3, default_root_dir=tmp_path)


@pytest.mark.parametrize("kwargs,error,named", [
    ({"sample_every_n_steps": 0}, ValueError, "sample_every_n_steps"),
    ({"sample_every_n_steps": True}, TypeError, "sample_every_n_steps"),
    ({"min_batches": 1.5}, TypeError, "min_batches"),
    ({"dormant_tau": float("nan")}, ValueError, "dormant_tau"),
    ({"dormant_tau": 1.0}, ValueError, "dormant_tau"),
    ({"saturation_eps": 0.5}, ValueError, "saturation_eps"),
    ({"saturation_eps": -0.1}, ValueError, "saturation_eps"),
    ({"redo_on": "all"}, ValueError, "redo_on"),
    ({"redo_cooldown_steps": 0}, ValueError, "redo_cooldown_steps"),
    ({"include": "net.1"}, TypeError, "include"),
    ({"unit_dims": {"net.1": 1.0}}, TypeError, "unit_dims"),
    ({"thresholds": {"dead_info": 0.1}}, TypeError, "thresholds"),
    ({"seed": 1.0}, TypeError, "seed"),
    ({"auto_remediate": 1}, TypeError, "auto_remediate"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, error, named):
    with pytest.raises(error, match=named):
        DeadNeuronTracker(**kwargs)


def test_unit_dims_override_picks_the_unit_dimension(tmp_path):
    class Sequence(DigitsMLP):
        """[N, 8, 8] rows as a sequence: a Linear over the last dim, then a ReLU."""

        def __init__(self):
            super().__init__()
            self.proj, self.act, self.head = nn.Linear(8, 6), nn.ReLU(), nn.Linear(8 * 6, 10)

        def forward(self, x):
            h = self.act(self.proj(x.reshape(-1, 8, 8)))
            return self.head(h.reshape(h.shape[0], -1))

    for dims, units in (({}, 6), ({"act": 1}, 8)):
        tracker = DeadNeuronTracker(sample_every_n_steps=1, unit_dims=dims)
        fit(tmp_path, Sequence(), [tracker], log_every_n_steps=4, limit_train_batches=4, max_epochs=1)
        assert tracker._sites.sites["act"].accumulator.units == units


def test_a_sampled_batch_reaches_the_window_once_whenever_it_is_read_or_saved():
    # The sites' statistics of a batch are merged at the batch's end in one update; a read or a
    # checkpoint before that end merges them first, and the end then adds nothing twice.
    from lightning_convergence.callbacks._unit_sites import UnitSites

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.GELU())
    sites = UnitSites(0.01, None, (), ())
    assert sites.attach(model) == 2
    x = torch.randn(8, 4)
    hidden = model[1](model[0](x))  # (before sampling starts: the hooks would count this call)
    sites.start_batch(sampled=True)
    out = model(x)
    saved = sites.state_dict()["window"]
    windows = {w.layer: w for w in sites.read()}
    sites.end_batch()
    assert torch.allclose(saved["1/abs_sum"], hidden.detach().sum(0).double())
    assert torch.allclose(saved["3/peak"], out.detach().amax(0).double())
    assert windows["3"].abs_sum == pytest.approx(out.detach().abs().sum(0).tolist(), rel=1e-6)
    assert sites.window.read() == {k: v.tolist() for k, v in saved.items()}  # not merged twice
    assert sites.batches == 1


def test_a_forward_that_never_reached_its_batch_end_is_merged_by_the_next_batch():
    # A fault between a sampled forward and its batch end: the next batch merges what it left,
    # as a merge per site did at once, so the window's count and sums agree.
    from lightning_convergence.callbacks._unit_sites import UnitSites

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    sites = UnitSites(0.01, None, (), ())
    sites.attach(model)
    first, second = torch.randn(8, 4), torch.randn(8, 4)
    sites.start_batch(sampled=True)
    a = model(first)  # ... and no end_batch
    sites.start_batch(sampled=True)
    b = model(second)
    sites.end_batch()
    assert sites.batches == 2
    assert torch.allclose(sites.window["1/abs_sum"], (a.sum(0) + b.sum(0)).detach().double())
