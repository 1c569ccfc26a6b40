"""PreflightCheck under real 2-process DDP on gloo: each rank runs the checks on its own batches,
the verdicts agree, the learning rate it applies is the same on both ranks, and the run afterwards
is bit-identical to one without it.

Under fork the parent is rank 0 and the child's callback objects are not the parent's, so each rank
writes what it saw to its own file and the test compares the files.
"""

import json
import os
from datetime import timedelta

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from benchmarks.zoo.models import CNN
from lightning_convergence import PreflightCheck
from tests.helpers.models import trainer_kwargs
from tests.helpers.preflight_models import BatchNormDropout, Digits

pytestmark = pytest.mark.distributed  # the strategy's 60 s collective timeout turns a hang into a failure


class TooHighCNN(Digits):
    """The zoo's digits CNN at 100x its tuned SGD rate."""

    def __init__(self) -> None:
        super().__init__(loader={"images": True})
        del self.net
        self.inner = CNN(lr=5.0)

    def forward(self, x):
        return self.inner(x)

    def configure_optimizers(self):
        return self.inner.configure_optimizers()


class WritePerRank(L.Callback):
    def __init__(self, out_dir: str, tag: str) -> None:
        self.out_dir, self.tag = out_dir, tag

    def on_train_end(self, trainer, pl_module):
        check = next((c for c in trainer.callbacks if isinstance(c, PreflightCheck)), None)
        weights = torch.cat([p.detach().reshape(-1) for p in pl_module.state_dict().values() if p.is_floating_point()])
        params = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        result = {"checksum": float(weights.double().sum()), "param_checksum": float(params.double().sum()),
                  "passed": None if check is None else {c["check"]: c["passed"] for c in check.section["checks"]},
                  "interventions": [] if check is None else check.records()["interventions"],
                  "causes": [] if check is None else sorted({d["causes"][0]["cause"] for d in check.records()["diagnoses"]
                                                             if d["severity"] != "info"})}
        with open(os.path.join(self.out_dir, f"{self.tag}{trainer.global_rank}.json"), "w") as handle:
            json.dump(result, handle)


def run(tmp_path, make_model, tag, callbacks, steps=6):
    L.seed_everything(0, verbose=False)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    kwargs = trainer_kwargs(tmp_path / tag, logger=False, max_steps=steps, devices=2, strategy=strategy)
    kwargs.pop("deterministic")
    L.Trainer(callbacks=[*callbacks, WritePerRank(str(tmp_path), tag)], **kwargs).fit(make_model())
    return [json.load(open(tmp_path / f"{tag}{rank}.json")) for rank in (0, 1)]


def test_healthy_run_is_unchanged_and_both_ranks_agree(tmp_path):
    without = run(tmp_path, BatchNormDropout, "without", [])
    with_check = run(tmp_path, BatchNormDropout, "with", [PreflightCheck(enabled=True, max_seconds=600.0)])
    assert with_check[0]["passed"] == with_check[1]["passed"]
    assert all(with_check[0]["passed"].values()), with_check[0]["passed"]
    # BatchNorm's running statistics are each rank's own; the weights are the same on both ranks.
    assert [r["checksum"] for r in with_check] == [r["checksum"] for r in without]
    assert with_check[0]["param_checksum"] == with_check[1]["param_checksum"]


def test_a_rate_too_high_is_named_and_cut_alike_on_both_ranks(tmp_path):
    ranks = run(tmp_path, TooHighCNN, "acting", [PreflightCheck(enabled=True, auto_remediate=True, max_seconds=600.0)], steps=3)
    assert ranks[0]["causes"] == ranks[1]["causes"] == ["learning_rate_too_high"]
    assert ranks[0]["interventions"] == ranks[1]["interventions"]
    [scale] = ranks[0]["interventions"]
    assert scale["action"] == "lr_scale" and scale["detail"]["factor"] < 0.1
    assert ranks[0]["param_checksum"] == ranks[1]["param_checksum"]
