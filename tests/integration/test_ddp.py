"""Two real processes on gloo (CPU): the monitor's decisions are identical on both ranks.

Under fork the parent is rank 0 and the child's callback objects are not the parent's, so each
rank writes what it saw to its own file and the test compares the files.
"""

import json
import os
from datetime import timedelta

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from lightning_convergence import default_callbacks
from tests.helpers.models import DigitsMLP, trainer_kwargs

pytestmark = pytest.mark.distributed


class NaNOnRankOne(DigitsMLP):
    """NaN batches on rank 1 only, at optimizer steps 2 and 3; an unused layer."""

    def __init__(self):
        super().__init__(shuffle=False)
        self.unused = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_rank == 1 and self.global_step in (2, 3):
            x = x * float("nan")
        return torch.nn.functional.cross_entropy(self(x), y)


class WritePerRank(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        monitor = next(c for c in trainer.callbacks if type(c).__name__ == "GradientNormMonitor")
        weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        result = {
            "checksum": float(weights.double().sum()),
            "finite": bool(torch.isfinite(weights).all()),
            "records": monitor._records_state(trainer),
            "global_step": trainer.global_step,
        }
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as handle:
            json.dump(result, handle)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fault_on_one_rank_gives_the_same_decision_on_both(tmp_path, accumulate):
    L.seed_everything(0, verbose=False)
    model = NaNOnRankOne()
    model.unused.requires_grad_(True)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60), find_unused_parameters=True)
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=1, devices=2, strategy=strategy,
                            accumulate_grad_batches=accumulate)
    kwargs.pop("deterministic")
    trainer = L.Trainer(callbacks=default_callbacks(auto_remediate=True, log_every_n_steps=3)
                        + [WritePerRank(str(tmp_path))], **kwargs)
    trainer.fit(model)
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["finite"] and ranks[1]["finite"]
    assert ranks[0]["records"]["interventions"] == ranks[1]["records"]["interventions"]
    skipped = [i["step"] for i in ranks[0]["records"]["interventions"] if i["action"] == "skip_step"]
    assert skipped == [2, 3]  # each rank sees 8 batches: 8 optimizer steps, or 4 with accumulation
    assert ranks[0]["global_step"] == ranks[1]["global_step"]
    assert os.path.exists(tmp_path / "convergence_report.json")  # written by rank 0 only


class DestroyProcessGroup(L.Callback):
    """Destroys the process group when a spawned rank's fit is over (the last teardown hook). A
    spawned process that exits with a gloo group alive can abort while the interpreter shuts down
    ("terminate called without an active exception": torch's gloo threads outlive Python; see
    pytorch/pytorch#190489), and the launcher reports that rank as failed after a fit that ended
    well: 6 of 30 runs of this test failed so (with the code of 3ee3b52 and of 0f6f051 alike), none of 14 with this.
    torch's own advice is to call ``destroy_process_group`` before a rank exits."""

    def teardown(self, trainer, pl_module, stage):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_spawn_smoke_with_tensorboard(tmp_path):
    """ddp_spawn pickles the callbacks into fresh processes; the parent's objects stay untouched,
    so the checks read what the ranks wrote."""
    from lightning.pytorch.loggers import TensorBoardLogger

    strategy = DDPStrategy(start_method="spawn", timeout=timedelta(seconds=60), find_unused_parameters=True)
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    kwargs = trainer_kwargs(tmp_path, logger=logger, max_steps=6, devices=2, strategy=strategy)
    kwargs.pop("deterministic")
    trainer = L.Trainer(callbacks=default_callbacks(auto_remediate=True, log_every_n_steps=2)
                        + [WritePerRank(str(tmp_path)), DestroyProcessGroup()], **kwargs)
    trainer.fit(NaNOnRankOne())
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert [i["step"] for i in ranks[0]["records"]["interventions"]] == [2, 3]
    report = json.load(open(tmp_path / "tb" / "version_0" / "convergence_report.json"))
    assert [(i["step"], i["action"]) for i in report["interventions"]] == [(2, "skip_step"), (3, "skip_step")]


class DivergesOnRankOne(DigitsMLP):
    """Rank 1's loss is inflated 1000x from step 6 (a fault seen by one rank only)."""

    def __init__(self):
        super().__init__(shuffle=False)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * 1e3 if self.global_rank == 1 and self.global_step >= 6 else loss


class WriteAdvisor(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        advisor = next(c for c in trainer.callbacks if type(c).__name__ == "PlateauAdvisor")
        weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        result = {"checksum": float(weights.double().sum()), "records": advisor._records_state(trainer),
                  "global_step": trainer.global_step}
        with open(os.path.join(self.out_dir, f"advisor{trainer.global_rank}.json"), "w") as handle:
            json.dump(result, handle)


def _fit_acting_suite_on_two_ranks(tmp_path, model, max_epochs, log_every_n_steps):
    """Fit ``model`` on 2 forked ranks with the acting suite; what PlateauAdvisor saw on each rank."""
    L.seed_everything(0, verbose=False)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=max_epochs, devices=2, strategy=strategy)
    kwargs.pop("deterministic")
    callbacks = default_callbacks(auto_remediate=True, log_every_n_steps=log_every_n_steps, monitor=None)
    L.Trainer(callbacks=callbacks + [WriteAdvisor(str(tmp_path))], **kwargs).fit(model)
    return [json.load(open(tmp_path / f"advisor{r}.json")) for r in (0, 1)]


def test_divergence_on_one_rank_gives_the_same_rollback_on_both(tmp_path):
    ranks = _fit_acting_suite_on_two_ranks(tmp_path, DivergesOnRankOne(), max_epochs=3, log_every_n_steps=4)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["records"] == ranks[1]["records"]
    actions = [i["action"] for i in ranks[0]["records"]["interventions"]]
    assert "rollback" in actions and "lr_scale" in actions


class SilentInputsOnRankOne(DigitsMLP):
    """Rank 1 trains on all-zero inputs: every unit whose bias is <= 0 is silent there."""

    def __init__(self):
        super().__init__(shuffle=False, hidden=32, lr=0.0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_rank == 1:
            x = x * 0
        return torch.nn.functional.cross_entropy(self(x), y)


class WriteTracker(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        tracker = next(c for c in trainer.callbacks if type(c).__name__ == "DeadNeuronTracker")
        silent = int((pl_module.net[0].bias <= 0).sum())
        with open(os.path.join(self.out_dir, f"tracker{trainer.global_rank}.json"), "w") as handle:
            json.dump({"dead": tracker.state_dict()["rule"]["previous_dead"], "silent_on_rank1": silent}, handle)


def test_a_unit_is_dead_only_if_dead_on_every_rank(tmp_path):
    from lightning_convergence import DeadNeuronTracker

    L.seed_everything(0, verbose=False)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=1, devices=2, strategy=strategy)
    kwargs.pop("deterministic")
    tracker = DeadNeuronTracker(sample_every_n_steps=1, min_batches=2, log_every_n_steps=4)
    trainer = L.Trainer(callbacks=[tracker, WriteTracker(str(tmp_path))], **kwargs)
    trainer.fit(SilentInputsOnRankOne())
    ranks = [json.load(open(tmp_path / f"tracker{r}.json")) for r in (0, 1)]
    assert ranks[0]["dead"] == ranks[1]["dead"]  # one agreed view
    combined = sum(ranks[0]["dead"]["net.1"])
    assert ranks[0]["silent_on_rank1"] >= 8 and combined < ranks[0]["silent_on_rank1"] // 2


_BUG_ON_ONE_RANK = '''
import sys
from datetime import timedelta

import lightning as L
from lightning.pytorch.strategies import DDPStrategy

from lightning_convergence import PlateauAdvisor, default_callbacks
from tests.helpers.models import DigitsMLP, trainer_kwargs

original = PlateauAdvisor._end_window


def buggy(self, trainer, pl_module, step):
    if trainer.global_rank == 1 and step >= 5:
        raise RuntimeError("boom on rank 1")
    return original(self, trainer, pl_module, step)


PlateauAdvisor._end_window = buggy
kwargs = trainer_kwargs(sys.argv[1], logger=False, max_epochs=2, devices=2,
                        strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=20)))
kwargs.pop("deterministic")
L.Trainer(callbacks=default_callbacks(auto_remediate=True, log_every_n_steps=3), **kwargs).fit(DigitsMLP())
'''


def test_a_bug_in_our_callback_on_one_rank_fails_both_ranks_within_the_timeout(tmp_path):
    """One rank raises inside PlateauAdvisor; the other must not wait forever in a collective.
    Run in a fresh interpreter so that a hang fails this test (subprocess timeout) instead of CI."""
    import subprocess
    import sys
    import time

    script = tmp_path / "bug_on_one_rank.py"
    script.write_text(_BUG_ON_ONE_RANK)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=root, capture_output=True, text=True,
                            timeout=240, env={**os.environ, "PYTHONPATH": root})
    assert result.returncode != 0
    assert "boom on rank 1" in result.stdout + result.stderr
    assert time.monotonic() - start < 200


class PlateauOnRankOne(DigitsMLP):
    """Each rank logs its own validation metric (no sync): rank 1's never improves."""

    def __init__(self):
        super().__init__(shuffle=False)

    def validation_step(self, batch, batch_idx):
        value = 1.0 if self.global_rank == 1 else 1.0 / (1 + self.current_epoch)
        self.log("val_metric", value)


def test_a_plateau_seen_by_one_rank_gives_one_decision_on_both(tmp_path):
    from lightning_convergence import PlateauAdvisor

    L.seed_everything(0, verbose=False)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=4, devices=2, strategy=strategy, limit_train_batches=4)
    kwargs.pop("deterministic")
    advisor = PlateauAdvisor(monitor="val_metric", patience=0, auto_remediate=True)
    trainer = L.Trainer(callbacks=[advisor, WriteAdvisor(str(tmp_path))], **kwargs)
    trainer.fit(PlateauOnRankOne())
    ranks = [json.load(open(tmp_path / f"advisor{r}.json")) for r in (0, 1)]
    assert ranks[0]["records"] == ranks[1]["records"] and ranks[0]["checksum"] == ranks[1]["checksum"]
    # the agreed value is the mean over ranks: (1 + 1/(1+e)) / 2 keeps improving, so no reduction
    assert [i for i in ranks[0]["records"]["interventions"] if i["action"] == "lr_scale"] == []


class NaNInputsOnRankOne(DigitsMLP):
    """The batch itself holds NaN on rank 1 only, at optimizer steps 2 and 3."""

    def __init__(self):
        super().__init__(shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        if self.trainer.training and self.global_rank == 1 and self.global_step in (2, 3):
            x = x * float("nan")
        return x, y


class WriteInputCheckerPerRank(WritePerRank):
    def on_train_end(self, trainer, pl_module):
        checker = next(c for c in trainer.callbacks if type(c).__name__ == "InputSanityChecker")
        weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as handle:
            json.dump({"checksum": float(weights.double().sum()), "finite": bool(torch.isfinite(weights).all()),
                       "records": checker.records()}, handle)


def test_nan_inputs_on_one_rank_skip_the_step_on_both_without_the_gradient_monitor(tmp_path):
    # Rank 1 sees NaN inputs, rank 0 does not; DDP averages rank 1's NaN gradients into rank 0's.
    # A skip decided from the rank-local count would skip on rank 1 only and let rank 0 step
    # into NaN weights; the agreed count skips on both.
    from lightning_convergence import InputSanityChecker

    L.seed_everything(0, verbose=False)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=1, devices=2, strategy=strategy)
    kwargs.pop("deterministic")
    trainer = L.Trainer(callbacks=[InputSanityChecker(auto_remediate=True, log_every_n_steps=3),
                                   WriteInputCheckerPerRank(str(tmp_path))], **kwargs)
    trainer.fit(NaNInputsOnRankOne())
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    assert ranks[0]["finite"] and ranks[1]["finite"]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    skips = [[i["step"] for i in r["records"]["interventions"] if i["action"] == "skip_step"] for r in ranks]
    assert skips == [[2, 3], [2, 3]]


class InfOnRankOneAtAHighRate(DigitsMLP):
    """From step 6, rank 1's loss is Inf while the LR is above 0.01: after finite steps, non-finite
    gradients on both ranks (the all-reduce spreads them) until the rate is cut."""

    def __init__(self):
        super().__init__(shuffle=False, lr=0.05)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        high = self.optimizers().param_groups[0]["lr"] > 0.01
        return loss * float("inf") if self.global_rank == 1 and self.global_step >= 6 and high else loss


def test_nonfinite_gradients_after_finite_steps_give_the_same_rollback_on_both(tmp_path):
    # Windows of 50 steps: none closes before the handover, which alone answers the Inf.
    ranks = _fit_acting_suite_on_two_ranks(tmp_path, InfOnRankOneAtAHighRate(), max_epochs=4, log_every_n_steps=50)
    assert ranks[0]["checksum"] == ranks[1]["checksum"] and ranks[0]["records"] == ranks[1]["records"]
    rollbacks = [i for i in ranks[0]["records"]["interventions"] if i["action"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["detail"]["found_by"] == "nonfinite_gradients"
    assert rollbacks[0]["step"] == 11 and ranks[0]["global_step"] == 32  # skips at 6-10; then it trained on
    assert not any(i["action"] == "stop" for i in ranks[0]["records"]["interventions"])


class DeadFirstLayer(DigitsMLP):
    """The first hidden layer's weights and biases at 0: dead from the start, with no negative
    bias to blame (SGD at 0.05, the same data order on both ranks' shards)."""

    def __init__(self):
        super().__init__(shuffle=False, hidden=32, lr=0.05)
        with torch.no_grad():
            self.net[0].weight.zero_()
            self.net[0].bias.zero_()


class PlantedLargeUpdates(L.Callback):
    """Posts, on every rank alike, what GradientNormMonitor would after updates far too large
    (planted: the model's own updates are ordinary), so that the dead units name the rate."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from lightning_convergence.callbacks._context import run_context

        run_context(trainer).evidence.post(update_ratio_median=0.5, update_ratio_step=trainer.global_step)


class WriteLog(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        from lightning_convergence.callbacks._context import run_context

        weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        log = run_context(trainer).log
        result = {"checksum": float(weights.double().sum()),
                  "interventions": [i.to_dict() for i in log.interventions]}
        with open(os.path.join(self.out_dir, f"log{trainer.global_rank}.json"), "w") as handle:
            json.dump(result, handle)


def test_units_revived_with_the_lr_cut_are_revived_alike_on_both_ranks(tmp_path):
    """The dead units' window is reduced over ranks and the cut is decided on the averaged loss,
    so both ranks revive the same units right after the same cut, with the same draws."""
    from lightning_convergence import DeadNeuronTracker, PlateauAdvisor

    L.seed_everything(0, verbose=False)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    kwargs = trainer_kwargs(tmp_path, logger=False, max_epochs=3, devices=2, strategy=strategy)
    kwargs.pop("deterministic")
    callbacks = [PlantedLargeUpdates(),
                 DeadNeuronTracker(sample_every_n_steps=1, auto_remediate=True, redo_cooldown_steps=1000,
                                   log_every_n_steps=4),
                 PlateauAdvisor(monitor=None, auto_remediate=True, log_every_n_steps=4), WriteLog(str(tmp_path))]
    L.Trainer(callbacks=callbacks, **kwargs).fit(DeadFirstLayer())
    ranks = [json.load(open(tmp_path / f"log{r}.json")) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    log = ranks[0]["interventions"]
    cut = next(i for i in log if i["action"] == "lr_scale" and i["detail"]["reason"] == "learning_rate_too_high")
    revived = next(i for i in log if i["action"] == "reinit_units")
    assert revived["step"] == cut["step"] and revived["detail"]["with"] == "lr_cut"
