"""Real runs for the report tests: short fits on digits, one watched by the suite, one not.

They are trained once per session into a cache folder; each test gets its own copy, so a test
that writes figures or breaks a report leaves the others untouched.
"""

from __future__ import annotations

import shutil
import warnings

import lightning as L
import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_convergence import default_callbacks
from lightning_convergence.recorder.console import ConvergenceWarning
from tests.helpers.models import DigitsMLP, trainer_kwargs


def _fit(root, name: str, watched: bool) -> None:
    L.seed_everything(0, verbose=False)
    # A NaN batch at step 12 and a high LR: the suite diagnoses, skips the step and clips.
    model = DigitsMLP(lr=0.5, nan_at_step=12)
    callbacks = default_callbacks(auto_remediate=True, log_every_n_steps=5) if watched else []
    logger = TensorBoardLogger(str(root), name=name, version=0)
    trainer = L.Trainer(**trainer_kwargs(root, max_epochs=2, logger=logger, callbacks=callbacks))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        trainer.fit(model)


@pytest.fixture(scope="session")
def _trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained_runs")
    _fit(root, "with_suite", watched=True)
    _fit(root, "without_suite", watched=False)
    return root


@pytest.fixture
def runs_dir(_trained_runs, tmp_path):
    """A copy of a demo-like folder: ``with_suite/version_0`` and ``without_suite/version_0``."""
    return shutil.copytree(_trained_runs, tmp_path / "runs")


@pytest.fixture
def watched_run(runs_dir):
    return runs_dir / "with_suite" / "version_0"


@pytest.fixture
def unwatched_run(runs_dir):
    return runs_dir / "without_suite" / "version_0"
